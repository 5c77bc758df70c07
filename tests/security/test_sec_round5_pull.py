"""A store file someone else made, pulled into yours, cannot reach past the run it carries.

The source of ``airun pull --from`` is a DuckDB file whoever shared it controls: it may hold
views instead of tables (a view runs SQL its author wrote, in the puller's process), and a
bundle may carry output tables of runs other than the one copied (another run's stored code,
which ``--trust-stored-code`` would sign with the puller's key). Everything is real: DuckDB
files, the ``airun`` command in its own process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sec_support import World, airun, one_line

from airun_nb import Workflow
from airun_nb.errors import AirunError, StoreError
from airun_nb.store import code as codestore
from airun_nb.store import transfer
from airun_nb.store.database import Store

SIMPLE = "name: simple\nsteps:\n  - id: a\n    python: result = 1\n"


def _team_store_reading(world: World, secret: Path) -> tuple[Path, str]:
    """A team store whose ``specs`` is a view that reads ``secret`` (a file of the puller)."""
    team = world.root / "team.duckdb"
    run_id = Workflow.from_yaml(SIMPLE).run(db=team).run_id
    Store.open(team).release()
    con = duckdb.connect(str(team))
    try:
        (spec_hash,) = con.execute(
            "SELECT spec_hash FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()  # type: ignore[misc]
        con.execute("DROP TABLE specs")
        con.execute(
            f"CREATE VIEW specs AS SELECT '{spec_hash}' AS spec_hash, 'simple' AS workflow, "
            f"content AS text FROM read_text('{secret}')"
        )
    finally:
        con.close()
    return team, run_id


def test_a_pulled_store_cannot_read_the_pullers_files_through_a_view(world: World) -> None:
    """A source store whose ``specs`` table is a view over ``read_text`` of a file outside the
    workspace (as the signing key or ``.env`` would be): the pull is refused in one line and
    the file's content appears nowhere in the destination store."""
    secret = world.outside / "signing.key"
    secret.write_text("KEY-MATERIAL-7f3a\n")
    team, run_id = _team_store_reading(world, secret)
    mine = world.root / "mine.duckdb"

    pulled = airun("pull", run_id, "--from", str(team), "--db", str(mine))
    assert pulled.returncode != 0, pulled.stdout
    line = one_line(pulled.stderr)
    assert "nothing copied" in line, line
    assert b"KEY-MATERIAL-7f3a" not in mine.read_bytes() if mine.exists() else True
    if mine.exists():
        assert Store.open(mine).run_row(run_id) is None


def test_a_store_connection_reads_no_file_but_its_own(world: World) -> None:
    """Even a query through the store's own connection cannot read another file: DuckDB's
    file functions are refused on every store connection."""
    store = Store.open(world.store)
    with pytest.raises(AirunError):
        try:
            store.query("SELECT content FROM read_text(?)", [str(world.outside / "secret.txt")])
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None


def _fn() -> Any:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec("def helper(x):\n    return x\n", ns)
    return ns["helper"]


def test_a_bundle_cannot_plant_another_runs_stored_code(world: World) -> None:
    """A bundle of run X carrying ``code/<V>`` (stored code of a run V of the destination) is
    refused as a whole, even with --trust-stored-code: the puller trusted X's code, never V's,
    and V keeps having no stored code."""
    team = Store.open(world.root / "team.duckdb")
    mine = Store.open(world.root / "mine.duckdb")
    carrier = Workflow.from_yaml(SIMPLE).run(db=team.path).run_id
    donor = Workflow.from_yaml(SIMPLE).run(db=team.path).run_id
    assert codestore.save(team, donor, {"helper": _fn()}) == ["helper"]
    victim = Workflow.from_yaml(SIMPLE).run(db=mine.path).run_id

    bundle = team.export_run(carrier)
    outputs = {**transfer.outputs_of(bundle), f"code/{victim}": team.get_table(f"code/{donor}")}
    bundle[transfer.OUTPUTS] = outputs  # type: ignore[assignment]
    with pytest.raises(StoreError) as refused:
        mine.import_run(transfer.reseal(bundle))
    assert "nothing copied" in refused.value.message
    assert codestore.stored_names(mine, victim) == []
    assert mine.run_row(carrier) is None


_NAME = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(
        [
            'x"; DROP TABLE runs; --',
            "../../etc/passwd",
            "main.runs",
            "code/r-00000000",
            "code/r-00000000/sources",
            "r-00000000/a/1",
            "airun_meta",
            '"',
            "\x00",
        ]
    ),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
@given(names=st.lists(_NAME, min_size=1, max_size=3, unique=True))
def test_hostile_output_names_in_a_bundle_touch_only_the_runs_outputs(
    world: World, names: list[str]
) -> None:
    """Whatever output table names a bundle carries (SQL, paths, other runs' code, NUL), the
    import either refuses in one line or creates only tables of the copied run, in the
    ``outputs`` schema; the store's own tables and other runs stay as they were."""
    import pyarrow as pa

    src = Store.open(world.root / "src.duckdb")
    dest = Store.open(world.store)
    run_id = Workflow.from_yaml(SIMPLE).run(db=src.path).run_id
    before_main = sorted(
        dest.query("SELECT table_name FROM information_schema.tables WHERE table_schema='main'")
    )
    before_rows = world.rows()
    bundle = src.export_run(run_id)
    outputs = {**transfer.outputs_of(bundle), **{n: pa.table({"v": [1]}) for n in names}}
    bundle[transfer.OUTPUTS] = outputs  # type: ignore[assignment]
    bundle[transfer.META] = [{**transfer.meta_of(bundle), "replace": True}]
    try:
        dest.import_run(bundle)
    except AirunError as exc:
        assert "\n" not in exc.message.strip()
    created = [
        str(r[0])
        for r in dest.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='outputs'"
        )
    ]
    for name in names:
        if name in created:
            assert name.startswith(f"{run_id}/") or name in (
                f"code/{run_id}",
                f"code/{run_id}/sources",
            ), name
    after_main = sorted(
        dest.query("SELECT table_name FROM information_schema.tables WHERE table_schema='main'")
    )
    assert after_main == before_main
    assert world.rows() == before_rows


GUARDED = (
    "name: guarded\non_failure: stop\nsteps:\n"
    "  - id: pay\n    python: |\n      open('paid', 'w').write('yes')\n      result = 1\n"
)


def test_a_forged_approval_in_a_pulled_run_does_not_pass_this_stores_policy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy requires alice's approval before python runs. A run waiting at that gate in
    a shared store is pulled with its gate row rewritten to "approved by alice" (anyone who
    can write the shared file can write that row): resuming it here opens the gate again and
    waits for this store's approvers; the step never runs."""
    policy = world.root.parent / "guard.yaml"
    policy.write_text(
        "rules:\n  - {name: guard, principals: ['*'], capabilities: [python.exec],"
        " decision: require_approval, approvers: [alice]}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    team = Store.open(world.root / "team.duckdb")
    first = Workflow.from_yaml(GUARDED).run(db=team.path, raise_on_failure=False)
    assert first.status == "waiting"
    bundle = team.export_run(first.run_id)
    (gate,) = bundle["approvals"]
    assert gate["gate_id"] == "pay.approval" and gate["status"] == "open"
    gate.update(status="approved", decision="approve", actor="alice", channel="cli")

    mine = Store.open(world.root / "mine.duckdb")
    mine.import_run(bundle)
    again = Workflow.from_yaml(GUARDED).run(
        db=mine.path, resume=first.run_id, raise_on_failure=False
    )
    assert again.status == "waiting", again.error
    assert not (world.root / "paid").exists()
    row = mine.gate_row(first.run_id, "pay.approval")
    assert row is not None and row["status"] == "open"


def test_a_forged_approval_copied_onto_a_team_store_arrives_closed(
    world: World, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    """The same forged gate, in a file pushed to the team store on PostgreSQL: the copy is
    checked before any backend receives it, so the gate arrives closed (not approved), the
    run's owner is cleared, and resuming it on the team store waits for this store's
    approvers; the step never runs."""
    from airun_nb.store.opening import open_store

    policy = world.root.parent / "guard.yaml"
    policy.write_text(
        "rules:\n  - {name: guard, principals: ['*'], capabilities: [python.exec],"
        " decision: require_approval, approvers: [alice]}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    shared = world.root / "shared.duckdb"
    first = Workflow.from_yaml(GUARDED).run(db=shared, raise_on_failure=False)
    assert first.status == "waiting"
    Store.open(shared).flush()
    Store.open(shared).release()
    with duckdb.connect(str(shared)) as con:  # anyone who can write the file can do this
        con.execute(
            "UPDATE approvals SET status = 'approved', decision = 'approve', actor = 'alice', "
            "channel = 'cli' WHERE run_id = ?",
            [first.run_id],
        )
    source = Store.open(shared)
    assert source.gate_row(first.run_id, "pay.approval")["status"] == "approved"
    team = open_store(pg_url)
    transfer.copy_run(source, team, first.run_id, by="analyst")
    row = team.gate_row(first.run_id, "pay.approval")
    assert row is not None and row["status"] != "approved"
    again = Workflow.from_yaml(GUARDED).run(db=pg_url, resume=first.run_id, raise_on_failure=False)
    assert again.status == "waiting", again.error
    assert not (world.root / "paid").exists()
