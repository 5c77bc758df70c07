"""Small output tables are kept as Parquet bytes in ``airun_outputs``: bytes someone planted
there (a pickle, even one signed with the owner's key) are only ever read as Parquet, so they
are refused in one line by a resume, a history query and a copy, and never unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import duckdb
import pytest
from sec_support import World, airun, one_line

import airun_nb
from airun_nb import Workflow
from airun_nb.errors import AirunError
from airun_nb.store import signing
from airun_nb.store.database import Store


class Pwn:
    """A pickle that runs code when loaded: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "pwned"))  # type: ignore[return-value]


FRAMES = """
name: frames
on_failure: stop
steps:
  - id: a
    python: |
      import pandas as pd
      result = pd.DataFrame({"x": [1, 2, 3]})
  - id: b
    needs: [a]
    python: |
      import os
      if not os.path.exists("go"):
          raise RuntimeError("not yet")
      result = int(steps.a.output["x"].sum())
"""


def _planted(world: World, signed: bool) -> tuple[str, str]:
    """A failed run whose step ``a`` output (a small frame, kept as Parquet bytes) was replaced
    by a pickle that writes ``pwned`` when loaded: (run id, output table name)."""
    r = Workflow.from_yaml(FRAMES).run(raise_on_failure=False)
    assert r.status == "failed"
    store = Store.open(world.store)
    name = store.query(
        "SELECT output_table FROM steps WHERE run_id = ? AND step_id = 'a'", [r.run_id]
    )[0][0]
    assert store.query("SELECT count(*) FROM airun_outputs WHERE name = ?", [name]) == [(1,)]
    store.flush()
    store.release()
    evil = pickle.dumps(Pwn(str(world.root / "pwned")))
    con = duckdb.connect(str(world.store))
    try:
        con.execute(
            "UPDATE airun_outputs SET data = ? WHERE name = ?",
            [signing.sign(evil) if signed else evil, name],
        )
    finally:
        con.close()
    return r.run_id, str(name)


@pytest.mark.parametrize("signed", [False, True], ids=["pickle", "signed-pickle"])
def test_a_planted_blob_is_refused_by_a_resume(world: World, signed: bool) -> None:
    """The resume that needs the planted output fails in one line naming the damaged table;
    the pickle (even one carrying the owner's signature) never runs."""
    run_id, name = _planted(world, signed)
    (world.root / "go").write_text("")
    r = Workflow.from_yaml(FRAMES).run(resume=run_id, raise_on_failure=False)
    assert r.status == "failed"
    assert "not Parquet" in str(r.error) and name in str(r.error), r.error
    assert "\n" not in str(r.error).strip()
    assert not (world.root / "pwned").exists()


def test_a_planted_blob_is_refused_by_history_sql_and_a_copy(world: World) -> None:
    """A history query naming the table and ``airun pull`` of the run are refused in one line;
    nothing is unpickled and nothing is copied."""
    run_id, name = _planted(world, signed=True)
    with pytest.raises(AirunError) as info:
        airun_nb.query(f'SELECT * FROM outputs."{name}"')
    assert "not Parquet" in info.value.message and "\n" not in info.value.message
    done = airun(
        "pull", run_id, "--from", str(world.store), "--db", str(world.root / "mine.duckdb")
    )
    assert done.returncode != 0
    assert "not Parquet" in one_line(done.stderr)
    assert not (world.root / "pwned").exists()
    mine = Store.open(world.root / "mine.duckdb")
    assert not mine.has_run(run_id)
