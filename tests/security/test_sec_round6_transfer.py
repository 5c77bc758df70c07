"""What a copied run may claim in the store it is copied into, and how much it may bring.

A run copied by ``airun pull`` or ``airun push`` comes from a store someone else controls (a
file anyone can write, or a team store). Its rows say who launched it; in the destination that
decides who may not approve its four-eyes gates and who may cancel it. So the copy is launched,
in the destination, by whoever pulled or pushed it, and the first launcher is kept only as
provenance (``origin_launcher``, ``copied_from``); every audit row recorded elsewhere is marked
as copied, and one new audit row says who copied the run from where. A pull is capped in size
(``copy_max_bytes``): past the cap, one line and nothing written. Everything is real: DuckDB
files, a PostgreSQL server for the team store, the ``airun`` command in its own process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sec_support import World, airun, one_line

import airun_nb
from airun_nb import Workflow
from airun_nb.errors import StoreError
from airun_nb.store import transfer
from airun_nb.store.database import Store

GATED = """
name: payout
steps:
  - id: prepare
    python: result = 1
  - id: review
    needs: [prepare]
    approval: {message: "pay out?", four_eyes: true}
  - id: pay
    needs: [review]
    python: result = 2
"""

BIG = """
name: big
steps:
  - id: table
    python: |
      import pandas as pd
      result = pd.DataFrame({"text": ["x" * 1000] * 400})
"""


@pytest.fixture
def team(backend: str, world: World, request: pytest.FixtureRequest) -> Iterator[str]:
    """The team store of the backend in force: a DuckDB file, or a PostgreSQL database."""
    from airun_nb.store.opening import open_store

    if backend == "duckdb":
        path = str(world.root.parent / "team.duckdb")
        open_store(path).release()
        yield path
        return
    from support.postgres import create_database, drop_database

    server = request.getfixturevalue("pg_server")
    url = create_database(server)
    try:
        open_store(url).release()
        yield url
    finally:
        drop_database(server, url)


def as_user(name: str) -> dict[str, str]:
    return {"AIRUN_IDENTITY": "env", "AIRUN_USER": name}


def test_a_pushed_run_cannot_borrow_a_launcher_to_pass_its_own_four_eyes_gate(
    world: World, team: str
) -> None:
    """Mallory runs a workflow with a four-eyes gate in a store of her own while claiming to be
    carol, pushes the waiting run to the team store and approves its gate there herself. In
    the team store the run is launched by mallory (who pushed it): her approval is refused as
    four-eyes, the gate stays open, the run shows carol only as its first launcher, and the
    audit says mallory copied it."""
    mine = world.root / "mallory.duckdb"
    wf = world.root / "payout.yaml"
    wf.write_text(GATED)
    started = airun("exec", str(wf), "--db", str(mine), env=as_user("carol"))
    assert started.returncode == 30, started  # waiting at the gate
    run_id = str(airun_nb.runs(db=mine)["run_id"].iloc[0])
    assert airun_nb.runs(db=mine)["launched_by"].tolist() == ["carol"]

    pushed = airun("push", run_id, "--to", team, "--db", str(mine), env=as_user("mallory"))
    assert pushed.returncode == 0, pushed
    approved = airun("approve", run_id, "review", "--db", team, env=as_user("mallory"))

    assert approved.returncode != 0, approved.stdout
    said = one_line(approved.stderr)
    assert "mallory" in said and "four-eyes" in said, said
    gates = airun_nb.approvals(run_id, db=team)
    assert gates["status"].tolist() == ["open"], gates[["status", "actor"]]
    assert gates["launched_by"].tolist() == ["mallory"]
    row = airun_nb.runs(db=team).set_index("run_id").loc[run_id]
    assert (row["launched_by"], row["origin_launcher"]) == ("mallory", "carol")
    assert row["copied_from"] == str(mine)
    audit = airun_nb.audit(run_id, db=team)
    copy = audit[audit["kind"] == "copy"]
    assert copy["principal"].tolist() == ["mallory"]
    assert "carol" in copy["result"].iloc[0]
    # Someone else may still decide it: the gate is not dead, only guarded.
    by_lead = airun("approve", run_id, "review", "--db", team, env=as_user("lead"))
    assert by_lead.returncode == 0, by_lead
    assert airun_nb.approvals(run_id, db=team)["actor"].tolist() == ["lead"]


def test_pulled_audit_rows_are_marked_as_copied_and_the_pull_is_recorded(
    world: World, team: str
) -> None:
    """After a pull, every audit row the team store recorded carries ``copied_from`` (the team
    store) in the audit DataFrame, the rows recorded here do not, and one ``copy`` row names
    the person who pulled the run (who is now its launcher here) and where it came from."""
    wf = world.root / "payout.yaml"
    wf.write_text(GATED)
    assert airun("exec", str(wf), "--db", team, env=as_user("carol")).returncode == 30
    run_id = str(airun_nb.runs(db=team)["run_id"].iloc[0])
    decided = airun("approve", run_id, "review", "--db", team, env=as_user("lead"))
    assert decided.returncode == 0, decided
    resumed = airun("resume", run_id, "--db", team, env=as_user("carol"))
    assert resumed.returncode == 0, resumed
    there = airun_nb.audit(run_id, db=team)
    assert len(there) >= 3 and there["copied_from"].isna().all()

    pulled = airun("pull", run_id, "--from", team, env=as_user("bob"))
    assert pulled.returncode == 0, pulled

    here = airun_nb.audit(run_id)
    copied, own = here[here["copied_from"].notna()], here[here["copied_from"].isna()]
    assert len(copied) == len(there)
    assert set(copied["copied_from"]) == {transfer.redact(team)}
    assert sorted(copied["kind"]) == sorted(there["kind"])
    assert own["kind"].tolist() == ["copy"] and own["principal"].tolist() == ["bob"]
    row = airun_nb.runs().set_index("run_id").loc[run_id]
    assert (row["launched_by"], row["origin_launcher"]) == ("bob", "carol")
    # A second copy keeps the first launcher and the marks of the rows it carries.
    back = world.root.parent / "back.duckdb"
    again = airun("push", run_id, "--to", str(back), env=as_user("dave"))
    assert again.returncode != 0  # `--to` must exist: it is not made by a push
    Store.open(back).release()
    again = airun("push", run_id, "--to", str(back), env=as_user("dave"))
    assert again.returncode == 0, again
    row = airun_nb.runs(db=back).set_index("run_id").loc[run_id]
    assert (row["launched_by"], row["origin_launcher"]) == ("dave", "carol")
    marks = airun_nb.audit(run_id, db=back)["copied_from"]
    assert (marks == transfer.redact(team)).sum() == len(there)
    assert (marks == str(world.store)).sum() == 1  # bob's copy row, recorded in his store
    assert marks.isna().sum() == 1  # dave's, recorded in `back`


def test_a_pull_above_copy_max_bytes_is_one_line_and_writes_nothing(
    world: World, team: str
) -> None:
    """A run whose output table is about 400 KB, pulled with ``AIRUN_COPY_MAX_BYTES=100000``:
    exit 1 with one line naming the run, its size and the setting; the destination store
    holds no row of it. With the cap above the run's size the same pull succeeds."""
    wf = world.root / "big.yaml"
    wf.write_text(BIG)
    assert airun("exec", str(wf), "--db", team).returncode == 0
    run_id = str(airun_nb.runs(db=team)["run_id"].iloc[0])
    snap = world.snapshot()

    refused = airun("pull", run_id, "--from", team, env={"AIRUN_COPY_MAX_BYTES": "100000"})

    assert refused.returncode == 1, refused
    said = one_line(refused.stderr)
    assert run_id in said and "copy_max_bytes" in said and "nothing copied" in said, said
    assert refused.stdout == ""
    world.assert_unchanged(snap)
    assert run_id not in airun_nb.runs()["run_id"].tolist()
    assert airun_nb.audit(run_id).empty

    taken = airun("pull", run_id, "--from", team, env={"AIRUN_COPY_MAX_BYTES": "5000000"})
    assert taken.returncode == 0, taken
    assert run_id in airun_nb.runs()["run_id"].tolist()


@pytest.mark.parametrize("value", ["lots", "-5", "0"])
def test_a_bad_copy_max_bytes_is_one_line(world: World, value: str) -> None:
    """A cap that is not a positive number refuses the pull in one line naming the setting
    (it never falls back to no cap)."""
    other = world.root.parent / "other.duckdb"
    run_id = Workflow.from_yaml("name: s\nsteps:\n  - id: a\n    python: result = 1\n").run(
        db=other
    )
    out = airun("pull", run_id.run_id, "--from", str(other), env={"AIRUN_COPY_MAX_BYTES": value})
    assert out.returncode == 1, out
    assert "copy_max_bytes" in one_line(out.stderr)
    assert run_id.run_id not in airun_nb.runs()["run_id"].tolist()


# -- generated attacks: whatever the copied rows claim ----------------------------------------
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=40)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    launcher=st.one_of(st.none(), names),
    origin=st.one_of(st.none(), names),
    copied_from=st.one_of(st.none(), names),
    audit_mark=st.one_of(st.none(), names),
    by=names.filter(bool),
)
def test_whatever_a_copied_run_claims_its_launcher_here_is_who_copied_it(
    tmp_path: Path,
    launcher: str | None,
    origin: str | None,
    copied_from: str | None,
    audit_mark: str | None,
    by: str,
) -> None:
    """A source store edited to claim any launcher, first launcher, source store and audit
    marks: in the destination the run and each of its gates are launched by ``by`` (who
    copied it); the first launcher kept is the claimed first launcher, else the claimed
    launcher; no audit row arrives unmarked; and exactly one new row records the copy by
    ``by``."""
    import uuid

    folder = tmp_path / uuid.uuid4().hex[:8]
    folder.mkdir()
    source, dest = Store.open(folder / "src.duckdb"), Store.open(folder / "dst.duckdb")
    try:
        result = Workflow.from_yaml(GATED).run(db=source.path, raise_on_failure=False)
        run_id = result.run_id
        source.release()
        import duckdb

        con = duckdb.connect(str(source.path))
        try:
            con.execute(
                "UPDATE runs SET launched_by = ?, origin_launcher = ?, copied_from = ? "
                "WHERE run_id = ?",
                [launcher, origin, copied_from, run_id],
            )
            con.execute("UPDATE approvals SET launched_by = ? WHERE run_id = ?", [launcher, run_id])
            con.execute("UPDATE audit SET copied_from = ? WHERE run_id = ?", [audit_mark, run_id])
        finally:
            con.close()
        source = Store.open(source.path)
        transfer.copy_run(source, dest, run_id, by=by)

        run = dest.query_dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]
        assert run["launched_by"] == by
        assert run["origin_launcher"] == (origin or launcher)
        assert run["copied_from"] == str(source.path)
        gates = dest.query_dicts("SELECT launched_by FROM approvals WHERE run_id = ?", [run_id])
        assert gates and {g["launched_by"] for g in gates} == {by}
        audit: list[dict[str, Any]] = dest.query_dicts(
            "SELECT kind, principal, copied_from FROM audit WHERE run_id = ?", [run_id]
        )
        unmarked = [a for a in audit if not a["copied_from"]]
        assert unmarked == [{"kind": "copy", "principal": by, "copied_from": None}], audit
        assert all(
            a["copied_from"] == (audit_mark or str(source.path)) for a in audit if a["copied_from"]
        )
    finally:
        source.release()
        dest.release()


def test_copy_run_refuses_a_bundle_above_its_cap_before_writing(tmp_path: Path) -> None:
    """In Python too: ``copy_run(..., max_bytes=N)`` below the run's size raises one line and
    the destination has no row of the run; at the run's size it copies."""
    source, dest = Store.open(tmp_path / "src.duckdb"), Store.open(tmp_path / "dst.duckdb")
    try:
        run_id = Workflow.from_yaml(BIG).run(db=source.path).run_id
        size = transfer.bundle_bytes(source.export_run(run_id))
        assert size > 400_000  # the output table counts
        with pytest.raises(StoreError) as refused:
            transfer.copy_run(source, dest, run_id, by="bob", max_bytes=size - 1)
        assert "\n" not in refused.value.message and "copy_max_bytes" in refused.value.message
        assert dest.run_row(run_id) is None
        assert dest.query("SELECT count(*) FROM audit") == [(0,)]
        transfer.copy_run(source, dest, run_id, by="bob", max_bytes=size)
        assert dest.run_row(run_id) is not None
    finally:
        source.release()
        dest.release()
