"""Replay as a test: check a recorded run against the current code, without touching its store.

``replay(run_id)`` copies the recorded run (its definition, params, step rows and stored
outputs) into a scratch store in a temporary folder, then runs each ``call``, ``python`` and
``sql`` step of it again with the current code, alone, its inputs being the recorded outputs of
the steps it needs. It returns one row per step: whether the new output equals the recorded one,
and what changed. Capability and approval steps are not run again (they act on the world).

Usable from pytest::

    from airun_nb.testing import assert_replays

    def test_refactor_keeps_results():
        assert_replays("r-1a2b3c4d", db="prod.duckdb")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from airun_nb.engine.ledger import timestamp
from airun_nb.errors import RunNotFound
from airun_nb.history.diff import diff
from airun_nb.store import transitions
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store
from airun_nb.store.schema import TABLES
from airun_nb.workflow import Workflow

_Db = str | os.PathLike[str] | None
REPLAYED_KINDS = ("call", "python", "sql")
COLUMNS = ["step", "kind", "replayed", "equal", "summary", "error"]


def replay(
    run_id: str, *, db: _Db = None, namespace: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Run the steps of the recorded run ``run_id`` again against the current code, in a
    scratch store; one row per step: ``equal`` is False where the output now differs."""
    source = open_store(db)
    folder = Path(tempfile.mkdtemp(prefix="airun-replay-"))
    scratch = open_store(folder / "replay.duckdb")
    try:
        params = _copy_run(source, scratch, run_id)
        wf = Workflow.from_run(run_id, db=scratch.path)
        kinds = {s.id: s.kind for s in wf.spec.steps}
        rows = scratch.step_rows(run_id)
        out = []
        for r in rows:
            step, kind = r["step_id"], kinds.get(r["step_id"], "")
            entry: dict[str, Any] = {"step": step, "kind": kind, "replayed": False}
            entry.update(equal=None, summary="", error=None)
            if kind not in REPLAYED_KINDS or r["status"] != "completed":
                entry["summary"] = (
                    f"not run again ({kind} step)"
                    if kind not in REPLAYED_KINDS
                    else f"not run again (it was {r['status']})"
                )
                out.append(entry)
                continue
            result = wf.run(
                db=scratch.path,
                params=params,
                namespace=namespace,
                fork=(run_id, step),
                fork_only=True,
                raise_on_failure=False,
            )
            entry["replayed"] = True
            if result.status != "completed":
                entry["equal"] = False
                entry["error"] = result.error
                entry["summary"] = f"now {result.status}"
            else:
                row = diff(run_id, result.run_id, db=scratch.path).set_index("step").loc[step]
                entry["equal"] = bool(row["equal"])
                entry["summary"] = "" if entry["equal"] else str(row["summary"])
            out.append(entry)
    finally:
        scratch.release()
        shutil.rmtree(folder, ignore_errors=True)
    df = pd.DataFrame(out, columns=COLUMNS)
    df["equal"] = df["equal"].astype("boolean")
    return df


def assert_replays(
    run_id: str, *, db: _Db = None, namespace: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """:func:`replay`, raising AssertionError that names every step whose output differs."""
    df = replay(run_id, db=db, namespace=namespace)
    bad = df[df["equal"].fillna(True) == False]  # noqa: E712 - a nullable boolean column
    if len(bad):
        lines = [f"{r.step}: {r.error or r.summary}" for r in bad.itertuples()]
        raise AssertionError(f"run {run_id} replays differently:\n  " + "\n  ".join(lines))
    return df


def _copy_run(source: Backend, scratch: Backend, run_id: str) -> dict[str, Any]:
    """The run's definition, run row, step rows and output tables, copied into ``scratch``."""
    run = source.run_row(run_id)
    if run is None:
        raise RunNotFound(f"no run '{run_id}' in {source.path}")
    specs = source.spec_rows(run["spec_hash"])
    steps = source.step_rows(run_id)
    recs = [_record("spec", "specs", s) for s in specs]
    recs.append(_record("run", "runs", {**run, "owner_pid": None, "owner_token": None}))
    for row in steps:
        table = row.get("output_table")
        if table:
            scratch.put_table(str(table), source.get_table(str(table)))
        recs.append(_record("step", "steps", row))
    transitions.commit(scratch, recs)
    scratch.flush()
    return json.loads(run["params"]) if run.get("params") else {}


def _record(kind: str, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"t": kind}
    for col, typ in TABLES[table][0]:
        value = row.get(col)
        if typ == "TIMESTAMP":
            value = timestamp(value)
        elif typ == "BLOB" and value is not None:
            value = base64.b64encode(bytes(value)).decode()
        rec[col] = value
    return rec
