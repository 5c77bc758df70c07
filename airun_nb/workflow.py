"""The Python entry point: ``Workflow.from_yaml(text).run()``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from airun_nb.engine.ledger import Listener
from airun_nb.engine.memory import gc_paused, gc_release
from airun_nb.engine.runner import Runner, roll_back, stored_spec
from airun_nb.errors import RunInterrupted, RunNotFound, WorkflowFailed
from airun_nb.result import RunResult
from airun_nb.spec import cache as speccache
from airun_nb.spec import parser as spec_mod
from airun_nb.spec.cache import NO_STORE
from airun_nb.spec.parser import WorkflowSpec
from airun_nb.store.opening import open_store


class Front(Protocol):
    """Where a run started from Python is shown (a notebook: its live table, gates, last run)."""

    namespace: dict[str, Any]
    listener: Listener
    source: str | None

    def finished(self, engine: Runner) -> None: ...


# Front ends that recognise a caller's globals as theirs (the notebook's user namespace); the
# notebook front end adds itself when it is loaded. The core knows none of them by name.
_fronts: list[Callable[[dict[str, Any]], Front | None]] = []


def add_front(find: Callable[[dict[str, Any]], Front | None]) -> None:
    """Let ``find(caller_globals)`` claim runs started from Python in its front end."""
    if find not in _fronts:
        _fronts.append(find)


def _caller_front() -> Front | None:
    """The front end of the code that called into this package (the first frame outside it)."""
    if not _fronts:
        return None
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("airun_nb"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    for find in _fronts:
        front = find(frame.f_globals)
        if front is not None:
            return front
    return None


class Workflow:
    """A parsed workflow, ready to run against a store."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec

    @classmethod
    def from_yaml(
        cls, text: str, *, name: str | None = None, line_offset: int = 0, db: Any = NO_STORE
    ) -> Workflow:
        """Parse ``text``; an unchanged text parsed before in this process is not parsed again,
        and with ``db`` (a store path, None for the default store) a big one is also found in
        that store's parsed-spec cache (:mod:`airun_nb.spec.cache`)."""
        return cls(speccache.parse(text, name=name, line_offset=line_offset, db=db))

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, name: str | None = None, db: Any = NO_STORE
    ) -> Workflow:
        p = Path(path)
        return cls(speccache.parse(p.read_text(), name=name, file_stem=p.stem, db=db))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, name: str | None = None) -> Workflow:
        return cls(spec_mod.from_dict(doc, name=name))

    @classmethod
    def from_run(cls, run_id: str, *, db: str | os.PathLike[str] | None = None) -> Workflow:
        """The workflow a stored run was started from (to resume it outside its notebook)."""
        return cls(stored_spec(open_store(db), run_id))

    @property
    def name(self) -> str:
        return self.spec.name

    def run(
        self,
        *,
        db: str | os.PathLike[str] | None = None,
        params: Mapping[str, Any] | None = None,
        namespace: Mapping[str, Any] | None = None,
        resume: str | None = None,
        new: bool = False,
        listener: Listener | None = None,
        user: str | None = None,
        principal: str | None = None,
        raise_on_failure: bool = True,
        fork: tuple[str, str] | None = None,
        fork_only: bool = False,
    ) -> RunResult:
        """Run (or resume) the workflow and return its :class:`RunResult`.

        By default the latest unfinished run of this workflow resumes; a finished one starts a
        new run (reusing the outputs of steps that did not change). ``resume=RUN`` resumes that
        run; ``new=True`` always starts afresh. ``principal`` is who the policy sees running it
        (an agent's name, say); by default the acting user (``AIRUN_USER`` or the login).
        ``fork=(RUN, STEP)`` starts a new run that reuses RUN's outputs of every step that is
        not STEP or downstream of it (see :func:`fork`). Failures raise
        :class:`~airun_nb.errors.WorkflowFailed` unless ``raise_on_failure=False``.

        Called from a notebook's cell (without ``namespace`` and ``listener``), the run draws
        its live table and gates as a ``%%workflow`` cell does, finds the notebook's functions,
        and is what ``airun_nb.last_run()`` returns.
        """
        front = _caller_front() if namespace is None and listener is None else None
        if front is not None:
            namespace, listener = front.namespace, front.listener
        try:
            with gc_paused():  # planning allocates many small objects and frees none
                engine = self.runner(
                    db=db,
                    params=params,
                    namespace=namespace,
                    listener=listener,
                    user=principal or user,
                )
                engine.prepare(resume=resume, new=new, fork=fork, fork_only=fork_only)
        except BaseException:
            gc_release()
            raise
        if front is not None:
            engine.ledger.source = front.source
        try:
            engine.execute()
        except (WorkflowFailed, RunInterrupted):
            if raise_on_failure:
                raise
        finally:
            if front is not None:
                front.finished(engine)
        return RunResult(engine)

    def runner(
        self,
        *,
        db: str | os.PathLike[str] | None = None,
        params: Mapping[str, Any] | None = None,
        namespace: Mapping[str, Any] | None = None,
        listener: Listener | None = None,
        user: str | None = None,
    ) -> Runner:
        return Runner(
            self.spec,
            open_store(db),
            namespace=namespace,
            params=params,
            listener=listener,
            user=user,
        )


def rollback(
    run_id: str,
    *,
    db: str | os.PathLike[str] | None = None,
    namespace: Mapping[str, Any] | None = None,
    listener: Listener | None = None,
    steps: int | None = None,
) -> RunResult:
    """Undo a run: run the compensations of its finished steps, newest first.

    ``steps=N`` undoes only the N newest finished steps of a completed run (it stays
    completed; those steps show as undone), the seed runtime's ``undo --steps N``.

    Works on a completed run ("undo this whole run"), a failed or interrupted one, and finishes a
    rollback that failed or was cut short. ``namespace`` resolves compensations that call
    notebook functions. Raises :class:`~airun_nb.errors.WorkflowFailed` if a compensation keeps
    failing (the run is then ``rollback_failed``; call again after fixing it).
    """
    if steps is not None and steps < 1:
        raise ValueError("steps: give a whole number of steps, 1 or more")
    store = open_store(db)
    return RunResult(roll_back(store, run_id, namespace=namespace, listener=listener, steps=steps))


def fork(
    run_id: str,
    from_step: str,
    *,
    params: Mapping[str, Any] | None = None,
    namespace: Mapping[str, Any] | None = None,
    db: str | os.PathLike[str] | None = None,
    listener: Listener | None = None,
    workflow: Workflow | None = None,
    raise_on_failure: bool = True,
) -> RunResult:
    """Start a new run from step ``from_step`` of the stored run ``run_id``.

    Every step that is not ``from_step`` and not downstream of it is replayed from ``run_id``'s
    stored outputs (not executed); ``from_step`` and everything downstream run with the current
    code (functions from ``namespace``) and the stored run's params updated with ``params``.
    ``workflow`` replaces the stored definition (a notebook cell's current YAML). The new run
    records ``forked_from``; it resumes and rolls back like any run, and undoing it undoes only
    what it ran. A failed or rolled-back run can be forked too.
    """
    stored = stored_params(run_id, db)
    wf = workflow if workflow is not None else Workflow.from_run(run_id, db=db)
    return wf.run(
        db=db,
        params={**stored, **(params or {})},
        namespace=namespace,
        listener=listener,
        fork=(run_id, from_step),
        raise_on_failure=raise_on_failure,
    )


def load_run(run_id: str, *, db: str | os.PathLike[str] | None = None) -> RunResult:
    """The :class:`RunResult` of a stored run: its status, step table, outputs and timeline,
    read from the store (after a kernel restart, or from another process). Nothing runs and
    nothing is written; outputs load on first access."""
    store = open_store(db, create=False)
    row = store.run_row(run_id)
    if row is None:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    wf = Workflow.from_run(run_id, db=store.path)
    params = json.loads(row["params"]) if row.get("params") else {}
    engine = Runner(wf.spec, store, params=params if isinstance(params, dict) else {})
    stored = engine.planner.load_rows(run_id)
    failed = store.tracebacks(run_id)
    for step_id, st in engine.states.items():
        step_row = stored.get(step_id)
        if step_row is None:
            continue
        engine.planner.apply_row(st, step_row)
        st.replayed = bool(step_row.get("replayed_from"))
        st.traceback = failed.get(step_id)
    engine.scope.blob_source.update(engine.planner.blob_source)
    ledger = engine.ledger
    ledger.run_id = run_id
    ledger.status = row["status"]
    ledger.error = row.get("error")
    ledger.failed_step = row.get("failed_step")
    ledger.launched_by = row.get("launched_by") or ledger.launched_by
    return RunResult(engine)


def stored_params(run_id: str, db: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The params a stored run ran with."""
    store = open_store(db)
    row = store.run_row(run_id)
    if row is None:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    value = json.loads(row["params"]) if row["params"] else {}
    return dict(value) if isinstance(value, dict) else {}
