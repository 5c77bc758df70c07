"""Signed stored code and values: pickled notebook code and pickled step outputs carry an HMAC
made with a key outside the store; a planted, unsigned or tampered pickle is refused with one
line on resume, fork and ``testing.replay``, before anything is unpickled; the resuming side
opts in to stored code."""

from __future__ import annotations

import base64
import pickle
from pathlib import Path

import cloudpickle
import duckdb
import pyarrow as pa
import pytest
from sec_support import World, airun, one_line

import airun_nb
from airun_nb import Workflow, testing
from airun_nb.store import signing
from airun_nb.store.database import Store


class Pwn:
    """A pickle that runs code when loaded: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "pwned"))  # type: ignore[return-value]


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


def _tamper(world: World, sql: str, params: list[object]) -> None:
    """Change the store's rows as someone who can write the file would."""
    store = Store.open(world.store)
    store.flush()
    store.release()
    con = duckdb.connect(str(world.store))
    try:
        con.execute(sql, params)
    finally:
        con.close()


def _raw(blob: bytes | str) -> bytes:
    return base64.b64decode(blob) if isinstance(blob, str) else bytes(blob)


def _failed_pickled_run(world: World) -> str:
    r = Workflow.from_yaml(PICKLED).run(raise_on_failure=False)
    assert r.status == "failed"
    blob = Store.open(world.store).query(
        "SELECT output_kind, output_blob FROM steps WHERE run_id = ? AND step_id = 'a'", [r.run_id]
    )[0]
    assert blob[0] == "pickle"
    assert _raw(blob[1]).startswith(signing.MAGIC)
    return r.run_id


def test_a_pickled_output_is_signed_and_loads_back(world: World) -> None:
    """The honest path: a pickled output is stored signed, and a resume reads it back."""
    run_id = _failed_pickled_run(world)
    (world.root / "go").write_text("")
    r = Workflow.from_yaml(PICKLED).run(resume=run_id)
    assert r.outputs["b"] == [1, 2, 3]


@pytest.mark.parametrize("how", ["unsigned", "tampered"])
def test_a_planted_step_output_is_refused_on_resume(world: World, how: str) -> None:
    """An output replaced by an unsigned pickle, or a signed one whose payload was changed, is
    refused with one line when a resume needs it; its code never runs."""
    run_id = _failed_pickled_run(world)
    evil = pickle.dumps(Pwn(str(world.root / "pwned")))
    if how == "tampered":
        good = _raw(
            Store.open(world.store).query(
                "SELECT output_blob FROM steps WHERE run_id = ? AND step_id = 'a'", [run_id]
            )[0][0]
        )
        evil = good[: len(signing.MAGIC) + 32] + evil
    _tamper(
        world,
        "UPDATE steps SET output_blob = ? WHERE run_id = ? AND step_id = 'a'",
        [evil, run_id],
    )
    (world.root / "go").write_text("")
    r = Workflow.from_yaml(PICKLED).run(resume=run_id, raise_on_failure=False)
    assert r.status == "failed"
    assert "refused" in str(r.error) and "step 'a'" in str(r.error), r.error
    assert "\n" not in str(r.error).strip()
    assert not (world.root / "pwned").exists()


def test_a_planted_step_output_is_refused_by_fork_and_replay(world: World) -> None:
    """``airun fork`` and ``testing.replay`` read stored outputs too: an unsigned pickle is
    refused there, and its code never runs."""
    (world.root / "go").write_text("")
    r = Workflow.from_yaml(PICKLED).run()
    evil = pickle.dumps(Pwn(str(world.root / "pwned")))
    _tamper(
        world,
        "UPDATE steps SET output_blob = ? WHERE run_id = ? AND step_id = 'a'",
        [evil, r.run_id],
    )
    done = airun("fork", r.run_id, "--from", "b")
    assert done.returncode != 0
    assert "refused" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not (world.root / "pwned").exists()
    try:
        frame = testing.replay(r.run_id)
    except airun_nb.errors.AirunError as exc:
        assert "refused" in exc.message
    else:
        assert "refused" in " ".join(str(e) for e in frame["error"].tolist())
    assert not (world.root / "pwned").exists()


GATED = """
name: gated
steps:
  - id: review
    approval: {message: ship?, approvers: [alice]}
  - id: ship
    needs: [review]
    call: ship
"""


def _waiting_with_code(world: World, blob: bytes) -> str:
    r = Workflow.from_yaml(GATED).run(namespace={"ship": lambda: "shipped"})
    assert r.status == "waiting", r.status
    store = Store.open(world.store)
    store.put_table(
        f"code/{r.run_id}",
        pa.table({"name": pa.array(["ship"]), "code": pa.array([blob], pa.binary())}),
    )
    store.release()
    assert airun("approve", r.run_id, "review", env={"AIRUN_USER": "alice"}).returncode == 0
    return r.run_id


def _evil_function(world: World) -> bytes:
    target = str(world.root / "pwned")

    def ship() -> str:
        Path(target).write_text("pwned")
        return "shipped"

    return cloudpickle.dumps(ship)


def test_resume_refuses_planted_unsigned_code(world: World) -> None:
    """A code table planted in the store (no signature) is refused in one line even when the
    resuming side trusts stored code; nothing of it runs."""
    run_id = _waiting_with_code(world, _evil_function(world))
    done = airun("resume", run_id, "--trust-stored-code")
    assert done.returncode != 0
    assert "is not signed; refused" in one_line(done.stderr)
    assert not (world.root / "pwned").exists()


def test_resume_without_opting_in_never_loads_stored_code(world: World) -> None:
    """Even signed stored code is not loaded unless the resuming side opts in: the resume
    stops naming the flag, and the function never runs."""
    run_id = _waiting_with_code(world, signing.sign(_evil_function(world)))
    done = airun("resume", run_id)
    assert done.returncode != 0
    assert "--trust-stored-code" in one_line(done.stderr)
    assert not (world.root / "pwned").exists()
    done = airun("resume", run_id, "--trust-stored-code")
    assert done.returncode == 0, done.stderr
    assert (world.root / "pwned").exists()  # signed with the owner's key and opted in


def test_the_key_lives_outside_the_store_readable_by_its_owner_only(world: World) -> None:
    """The key is in the user's config folder, mode 0600, and protected from every capability;
    a key others may read is refused."""
    path = signing.key_path()
    signing.key()
    assert world.root not in path.parents
    assert (path.stat().st_mode & 0o777) == 0o600
    path.chmod(0o644)
    try:
        with pytest.raises(signing.SignatureError, match="chmod 600"):
            signing.sign(b"x")
    finally:
        path.chmod(0o600)


def test_a_planted_spec_cache_entry_is_a_miss(world: World) -> None:
    """A parsed workflow planted in the store's spec cache under the key of an honest text
    (a valid spec pickle, but unsigned) is not used: the text is parsed again."""
    from airun_nb.spec import cache as speccache
    from airun_nb.spec import parser as spec_parser

    text = "name: big\nsteps:\n" + "".join(
        f"  - id: s{i}\n    python: result = {i}  # padding padding padding\n" for i in range(400)
    )
    assert len(text) >= speccache.STORE_MIN_CHARS
    Workflow.from_yaml(text).run()
    planted = spec_parser.parse(
        "name: big\nsteps:\n  - id: s0\n    python: open('pwned', 'w').write('x')\n"
    )
    _tamper(
        world,
        "INSERT OR REPLACE INTO spec_cache VALUES (?, now()::timestamp, ?)",
        [speccache.cache_key(text), pickle.dumps(planted)],
    )
    speccache.forget()
    spec = Workflow.from_yaml(text).spec
    assert len(spec.steps) == 400
    assert not (world.root / "pwned").exists()
