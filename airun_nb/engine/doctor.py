"""``airun doctor``: open a store, fold its journal, check that its rows hang together.

Each check gives a :class:`Finding` (``ok``, ``problem`` or ``repaired``). Checks: the store
file opens (not corrupt, not foreign), the journal folds (a damaged tail is set aside by the
fold itself, see :mod:`~airun_nb.store.journal`), earlier set-aside journal bytes, step rows whose
run is missing, attempts whose step is missing, and runs left ``running`` by a process that is
gone. With ``repair=True`` a corrupt store file is moved aside (its bytes kept) so that a new
one can be made, and dead runs are closed as ``interrupted`` (each claimed under the lease,
so a run that came back to life meanwhile is left alone); resuming them works as before.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airun_nb.engine.claim import claim_run
from airun_nb.errors import AirunError, RunBusy, StoreBusy, StoreError, StoreWarning
from airun_nb.gates import followup
from airun_nb.settings import environment as config
from airun_nb.settings.environment import StoreURL
from airun_nb.store import transitions
from airun_nb.store.backend import Backend
from airun_nb.store.faults import short
from airun_nb.store.lease import Lease
from airun_nb.store.opening import open_store
from airun_nb.store.owner import owner_fields


@dataclass
class Finding:
    check: str
    status: str  # ok | problem | repaired
    detail: str


# Finishes one unfinished run (resumes it, which finishes a rollback too) and says how it ended;
# raises an AirunError that says what is needed when it cannot (the front end supplies it: it
# knows where the code of a run can come from).
Finisher = Callable[[str], str]


def examine(
    db: str | os.PathLike[str] | None = None,
    *,
    repair: bool = False,
    finish: Finisher | None = None,
) -> list[Finding]:
    """Check the store at ``db`` (never creating one); repair what can be repaired: with
    ``finish``, the unfinished runs (a rollback, a run whose process died, a decided gate that
    nobody continued) are finished."""
    where = config.resolve_db(db)
    if isinstance(where, StoreURL):  # a server store: no files to check, its rows are
        store = open_store(where, create=False)
        opened = [Finding("store", "ok", f"{where} opens as an airun_nb store")]
        return _examine_rows(store, where, opened, repair, finish)
    path = where
    if not path.exists():
        raise StoreError(f"there is no store at {short(path)} (check --db or AIRUN_DB)")
    findings: list[Finding] = [_dead_waiters(path, repair)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        try:
            store = open_store(path, create=False)
        except StoreBusy:
            raise
        except StoreError as exc:
            findings.append(Finding("store file", "problem", exc.message))
            if repair and "corrupt" in exc.message:
                findings.append(_move_aside(path))
            return findings
    findings.append(Finding("store file", "ok", f"{short(path)} opens as an airun_nb store"))
    journal = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    findings.append(
        Finding("journal", "repaired", journal[0])
        if journal
        else Finding("journal", "ok", "every journaled record folded")
    )
    aside = sorted(path.parent.glob(path.name + ".journal*.damaged-*"))
    if aside:
        names = ", ".join(p.name for p in aside[:3]) + (" ..." if len(aside) > 3 else "")
        findings.append(
            Finding("set-aside journal bytes", "ok", f"{len(aside)} file(s) kept: {names}")
        )
    return _examine_rows(store, path, findings, repair, finish)


def _examine_rows(
    store: Backend,
    path: Path | StoreURL,
    findings: list[Finding],
    repair: bool,
    finish: Finisher | None,
) -> list[Finding]:
    """The checks of the store's rows, whichever backend holds them."""
    for check, n in store.orphan_counts().items():
        findings.append(
            Finding(check, "problem", f"{n} row(s); nothing reads them, left in place")
            if n
            else Finding(check, "ok", "none")
        )
    unfinished = _unfinished(store)
    store.release()
    if repair and finish is not None:
        findings.extend(_finish_all(unfinished, finish))
        store = open_store(path, create=False)  # what is left: closed as before
    else:
        findings.extend(_report_unfinished(unfinished))
    findings.append(_dead_runs(store, repair))
    if repair:
        findings.append(_follow_ups(store))
    store.release()
    return findings


def _follow_ups(store: Backend) -> Finding:
    """Send the open gates' due reminders and escalations (each once, whoever else watches)."""
    fired = followup.sweep(store).fired
    if not fired:
        return Finding("gate reminders and escalations", "ok", "none due")
    said = ", ".join(
        f"{f.run_id}/{f.gate_id} "
        + (f"reminder {f.period}" if f.kind == "reminder" else f"escalated to {', '.join(f.to)}")
        for f in fired
    )
    return Finding("gate reminders and escalations", "repaired", f"sent: {said}")


# -- unfinished runs --------------------------------------------------------------------------
_UNFINISHED = {
    "rolling_back": "rollbacks left by a dead process",
    "running": "dead processes' runs resumed",
    "decided": "decided gates nobody continued",
}


def _unfinished(store: Backend) -> list[tuple[str, str]]:
    """(state, run) of every run that stopped half-way: a rollback or a run whose process is
    gone, and a waiting run whose gates were all decided without the run going on."""
    out = []
    for r in store.runs_with_status("running", "rolling_back"):
        if not store.owner_alive(r):
            out.append((str(r["status"]), str(r["run_id"])))
    for run_id in store.waiting_runs_with_every_gate_decided():
        out.append(("decided", run_id))
    return out


def _report_unfinished(unfinished: list[tuple[str, str]]) -> list[Finding]:
    out = []
    for state in ("rolling_back", "decided"):  # dead `running` runs: see _dead_runs
        ids = [r for s, r in unfinished if s == state]
        if not ids:
            out.append(Finding(_UNFINISHED[state], "ok", "none"))
            continue
        what = "finish the rollback" if state == "rolling_back" else "continue them"
        out.append(
            Finding(
                _UNFINISHED[state],
                "problem",
                f"{len(ids)}: {_ids(ids)} (`airun doctor --repair` or `airun resume RUN` "
                f"{'finishes' if state == 'rolling_back' else 'continues'} them: {what})",
            )
        )
    return out


def _finish_all(unfinished: list[tuple[str, str]], finish: Finisher) -> list[Finding]:
    """Finish every unfinished run that can be; name what is needed for the others."""
    done: dict[str, list[str]] = {}
    needs: dict[str, list[str]] = {}
    for state, run_id in unfinished:
        try:
            ended = finish(run_id)
            done.setdefault(state, []).append(f"{run_id} {ended}")
        except AirunError as exc:
            needs.setdefault(state, []).append(f"{run_id}: {exc.message}")
    out = []
    for state, check in _UNFINISHED.items():
        if state in done:
            out.append(Finding(check, "repaired", "finished " + "; ".join(done[state])))
        if state in needs:
            out.append(Finding(check, "problem", "cannot finish " + "; ".join(needs[state])))
        if state not in done and state not in needs and state != "running":
            out.append(Finding(check, "ok", "none"))
    return out


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")


def _dead_runs(store: Backend, repair: bool) -> Finding:
    rows = store.runs_with_status("running")
    dead = [r for r in rows if not store.owner_alive(r)]
    if not dead:
        return Finding("runs left running by a dead process", "ok", "none")
    ids = ", ".join(r["run_id"] for r in dead[:5]) + (" ..." if len(dead) > 5 else "")
    if not repair:
        return Finding(
            "runs left running by a dead process",
            "problem",
            f"{len(dead)}: {ids} (resume them, or `airun doctor --repair` resumes those whose "
            "code is available and closes the rest as interrupted)",
        )
    closed = []
    for r in dead:
        try:
            claim_run(
                store,
                r["run_id"],
                status="interrupted",
                owner=owner_fields(),
                alive=store.owner_alive,
                expect_status=("running",),
                extra={
                    "finished_at": time.time(),
                    "error": "its process died; closed by airun doctor",
                },
            )
        except RunBusy:
            continue  # it has an owner again: not ours to close
        transitions.commit(store, [_event(r["run_id"])])
        closed.append(r["run_id"])
    store.flush()
    return Finding(
        "runs left running by a dead process",
        "repaired",
        f"closed {len(closed)} as interrupted: {', '.join(closed[:5])}"
        + (" ..." if len(closed) > 5 else ""),
    )


def _dead_waiters(path: Path, repair: bool) -> Finding:
    """Markers in ``<store>.waiters/`` left by processes killed while waiting for the lease:
    every holder would hand the lease over to nobody (looked at before the store is opened,
    which removes them on sight too)."""
    check = "lease waiters of dead processes"
    dead = Lease(path).dead_waiters(remove=repair)
    if not dead:
        return Finding(check, "ok", "none")
    names = ", ".join(dead[:3]) + (" ..." if len(dead) > 3 else "")
    if repair:
        return Finding(check, "repaired", f"removed {len(dead)}: {names}")
    return Finding(check, "problem", f"{len(dead)}: {names} (`airun doctor --repair` removes them)")


def _event(run_id: str) -> dict[str, object]:
    return {
        "t": "ev",
        "ts": time.time(),
        "run_id": run_id,
        "step_id": None,
        "kind": "run_interrupted",
        "detail": '{"by": "airun doctor", "reason": "its process died"}',
    }


def _move_aside(path: Path) -> Finding:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        path.rename(target)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            wal.rename(target.with_name(target.name + ".wal"))
    except OSError as exc:
        return Finding("store file", "problem", f"could not move it aside: {exc.strerror}")
    return Finding(
        "store file",
        "repaired",
        f"moved to {short(target)} (bytes kept); the next run starts a new store",
    )


def table(findings: list[Finding]) -> str:
    """The findings as a plain-text table."""
    width = max(len(f.check) for f in findings)
    lines = [f"{'check'.ljust(width)}  status    detail"]
    lines += [f"{f.check.ljust(width)}  {f.status.ljust(8)}  {f.detail}" for f in findings]
    return "\n".join(lines)


def healthy(findings: list[Finding]) -> bool:
    return all(f.status != "problem" for f in findings)
