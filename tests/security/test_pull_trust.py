"""A pulled run's pickles are not trusted just because they were copied.

Stored notebook code and pickled step outputs are signed with a key outside the store. Here
both stores belong to the same user with the same key, the case where a copied signature would
still verify: the copy must be refused anyway until the user pulls with --trust-stored-code,
which signs it with their key. Everything is real: DuckDB files and the `airun` command in
its own process.
"""

from __future__ import annotations

from pathlib import Path

from sec_support import World, airun, one_line

from airun_nb import Workflow
from airun_nb.errors import AirunError
from airun_nb.store import code as codestore
from airun_nb.store import signing, transfer
from airun_nb.store.database import Store
from airun_nb.workflow import load_run

STORED = """
name: stored
on_failure: stop
steps:
  - id: wait
    python: |
      import os
      if not os.path.exists("go"):
          raise RuntimeError("not yet")
  - id: twice
    needs: [wait]
    call: double
    with: {x: 21}
"""

PICKLED = """
name: pick
on_failure: stop
steps:
  - id: a
    python: result = {1, 2, 3}
  - id: b
    needs: [a]
    python: |
      import os
      if not os.path.exists("go"):
          raise RuntimeError("not yet")
      result = sorted(steps.a.output)
"""


def _double() -> object:
    """A notebook function (pickled by value) that leaves a mark when it runs."""
    ns: dict[str, object] = {"__name__": "__main__"}
    exec(
        "def double(x):\n    open('double-ran', 'w').write('yes')\n    return 2 * x\n",
        ns,
    )
    return ns["double"]


def _failed_run_with_stored_code(world: World) -> str:
    double = _double()
    r = Workflow.from_yaml(STORED).run(namespace={"double": double}, raise_on_failure=False)
    assert r.status == "failed"
    assert codestore.save(Store.open(world.store), r.run_id, {"double": double}) == ["double"]  # type: ignore[dict-item]
    return r.run_id


def test_pulled_stored_code_is_refused_until_the_user_trusts_it(world: World) -> None:
    """After a plain pull, resuming with --trust-stored-code is refused in one line naming the
    copy (the function never runs); the same pull with --trust-stored-code signs it with the
    user's key and the resume runs it. The team store's own copy still loads."""
    run_id = _failed_run_with_stored_code(world)
    mine = str(world.root / "mine.duckdb")
    team = str(world.store)

    pulled = airun("pull", run_id, "--from", team, "--db", mine)
    assert pulled.returncode == 0, pulled.stderr
    assert one_line(pulled.stdout).startswith(f"pulled {run_id}: 2 steps")
    (world.root / "go").write_text("")

    refused = airun("resume", run_id, "--db", mine, "--trust-stored-code")
    assert refused.returncode != 0
    line = one_line(refused.stderr)
    assert "copied from another store" in line and "refused" in line, line
    assert not (world.root / "double-ran").exists()
    assert codestore.stored_names(Store.open(Path(mine)), run_id) == ["double"]  # kept

    again = airun("pull", run_id, "--from", team, "--db", mine, "--replace", "--trust-stored-code")
    assert again.returncode == 0, again.stderr
    done = airun("resume", run_id, "--db", mine, "--trust-stored-code")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (world.root / "double-ran").read_text() == "yes"
    assert load_run(run_id, db=mine).outputs["twice"] == 42

    assert list(codestore.load(Store.open(world.store), run_id)) == ["double"]


def test_a_pulled_pickled_output_is_refused_until_trusted(world: World) -> None:
    """A pickled step output copied from another store is refused when a resume needs it, in
    one line; pulled with trust, it loads. The bundle itself never carries a signature."""
    r = Workflow.from_yaml(PICKLED).run(raise_on_failure=False)
    assert r.status == "failed"
    team, mine = Store.open(world.store), Store.open(world.root / "mine.duckdb")

    bundle = transfer.copy_run(team, mine, r.run_id, by="analyst")
    blob = next(s["output_blob"] for s in bundle["steps"] if s["step_id"] == "a")
    assert bytes(blob).startswith(signing.COPIED) and signing.MAGIC not in bytes(blob)
    (world.root / "go").write_text("")
    again = Workflow.from_yaml(PICKLED).run(db=mine.path, resume=r.run_id, raise_on_failure=False)
    assert again.status == "failed"
    assert "copied from another store" in str(again.error), again.error
    assert "\n" not in str(again.error).strip()

    transfer.copy_run(team, mine, r.run_id, replace=True, trust_stored_code=True, by="analyst")
    done = Workflow.from_yaml(PICKLED).run(db=mine.path, resume=r.run_id)
    assert done.outputs["b"] == [1, 2, 3]


def test_a_bundle_cannot_smuggle_a_signature(world: World) -> None:
    """A bundle handed to ``import_run`` straight from ``export_run`` holds no signature made
    with the user's key, so even a caller that skips the commands gets an untrusted copy."""
    run_id = _failed_run_with_stored_code(world)
    bundle = Store.open(world.store).export_run(run_id)
    mine = Store.open(world.root / "mine.duckdb")
    mine.import_run(bundle)
    try:
        codestore.load(mine, run_id)
    except AirunError as exc:
        assert "copied from another store" in exc.message
    else:
        raise AssertionError("stored code loaded from a copy nobody trusted")
