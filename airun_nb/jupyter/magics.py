"""``%%workflow`` and ``%workflow``: the notebook front end.

Bad magic arguments raise :class:`~IPython.core.error.UsageError`; everything else that can go
wrong is an :class:`~airun_nb.errors.AirunError` whose short message is what the cell shows.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from airun_nb.engine.timeouts import name_files_with
from airun_nb.errors import WorkflowFailed
from airun_nb.jupyter.config import Workflow as WorkflowSettings
from airun_nb.jupyter.lastrun import last_result, notebook_path

if TYPE_CHECKING:
    import yaml

    from airun_nb.history import diff as rundiff
    from airun_nb.history import frames as history
    from airun_nb.history import why as explanation
    from airun_nb.jupyter.display import LiveTable, said_once
    from airun_nb.jupyter.pyrun import after_run
    from airun_nb.jupyter.widgets import draw_gates, waiting_line
    from airun_nb.store import code as codestore
    from airun_nb.store.opening import open_store
    from airun_nb.workflow import Workflow, rollback, stored_params


def _imports() -> None:
    """What the magics use (pandas, the engine, the widgets, DuckDB), imported on their first
    use rather than by ``%load_ext airun_nb``."""
    if "Workflow" in globals():
        return
    import yaml

    from airun_nb.history import diff as rundiff
    from airun_nb.history import frames as history
    from airun_nb.history import why as explanation
    from airun_nb.jupyter.display import LiveTable, said_once
    from airun_nb.jupyter.pyrun import after_run
    from airun_nb.jupyter.widgets import draw_gates, run_table_widget, waiting_line
    from airun_nb.store import code as codestore
    from airun_nb.store.opening import open_store
    from airun_nb.workflow import Workflow, rollback, stored_params

    names = (yaml, rundiff, history, explanation, LiveTable, said_once, draw_gates, after_run)
    names += (run_table_widget, waiting_line, codestore, open_store, rollback, stored_params)
    globals().update({n: v for n, v in locals().items() if n != "names"})
    globals()["Workflow"] = Workflow  # last: it marks the imports done


def _split(magic: str, line: str) -> list[str]:
    """The words of a magic line; an unbalanced quote is a usage error, not a traceback."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{magic}: {exc} in: {line.strip()}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"%{self.prog}: {message}")


def _cell_parser() -> _Parser:
    p = _Parser(prog="%workflow", add_help=False)
    p.add_argument("name", nargs="?")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", metavar="RUN")
    p.add_argument("--new", action="store_true")
    p.add_argument("--db", metavar="PATH")
    p.add_argument("--fork", metavar="RUN")
    p.add_argument("--from", dest="from_step", metavar="STEP")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--submit", action="store_true")
    p.add_argument("--queue", metavar="NAME")
    return p


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"%%workflow: --param takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@magics_class
class WorkflowMagics(Magics):
    @cell_magic("workflow")
    def workflow_cell(self, line: str, cell: str) -> None:
        """Run the workflow written in this cell (YAML), resuming its unfinished run, if any.

        ::

            %%workflow [NAME] [--param KEY=VALUE ...] [--resume RUN | --new] [--db PATH]
                       [--fork RUN --from STEP] [--dry-run] [--submit [--queue NAME]]

        NAME                the workflow's name (default: its ``name:`` key, else the cell)
        --param, -p K=V     set a workflow param (VALUE read as YAML: 3, true, [a, b]); repeat
        --resume RUN        resume that run (default: the latest unfinished run of this
                            workflow resumes; a finished one starts a new run that reuses
                            the outputs of steps that did not change)
        --new               always start a new run, executing every step
        --db PATH           the store file (default: $AIRUN_DB or ./airun.duckdb)
        --fork RUN          start a new run from RUN's stored outputs, re-running ...
        --from STEP         ... STEP and everything downstream of it (goes with --fork)
        --dry-run           print the plan (what would run, what would be reused, and why);
                            run nothing
        --submit            queue a new run for ``airun worker`` instead of running it here
                            (notebook functions go with it when ``store_code`` is on)
        --queue NAME        the queue --submit puts it on (default: default)

        A run left waiting at an approval gate draws the gate's buttons; ``airun_nb.last_run()``
        is the run's :class:`~airun_nb.result.RunResult`. A workflow kept in a file runs with
        ``%workflow run FILE``.
        """
        _imports()
        args = _cell_parser().parse_args(_split("%%workflow", line))
        if args.resume and args.new:
            raise UsageError("%%workflow: give --resume RUN or --new, not both")
        if bool(args.fork) != bool(args.from_step):
            raise UsageError("%%workflow: --fork RUN goes with --from STEP")
        if args.fork and (args.resume or args.new):
            raise UsageError("%%workflow: --fork does not go with --resume or --new")
        if args.queue and not args.submit:
            raise UsageError("%%workflow: --queue NAME goes with --submit")
        if args.submit and (args.resume or args.fork or args.dry_run):
            raise UsageError(
                "%%workflow: --submit queues a new run; not with --resume, --fork or --dry-run"
            )
        wf = Workflow.from_yaml(cell, name=args.name, line_offset=1, db=args.db)
        params = _params(args.param)
        if args.submit:
            self._submit(wf, params, args.queue or "default", args.db)
            return
        fork = (args.fork, args.from_step) if args.fork else None
        if fork is not None:
            params = {**stored_params(args.fork, args.db), **params}
        if args.dry_run:
            engine = wf.runner(db=args.db, params=params, namespace=self.shell.user_ns)
            plan = engine.dry_run(resume=args.resume, new=args.new, fork=fork)
            print(explanation.plan_text(plan))
            return
        self._run(wf, db=args.db, params=params, resume=args.resume, new=args.new, fork=fork)

    def _run_file(self, words: list[str], db: str | None) -> None:
        """``%workflow run FILE``: a workflow kept in a file, run as a cell with its YAML is."""
        p = _Parser(prog="workflow run", add_help=False)
        p.add_argument("file")
        p.add_argument("--name", metavar="NAME")
        p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--resume", metavar="RUN")
        p.add_argument("--new", action="store_true")
        p.add_argument("--dry-run", action="store_true")
        args = p.parse_args(words)
        if args.resume and args.new:
            raise UsageError("%workflow run: give --resume RUN or --new, not both")
        path = Path(args.file).expanduser()
        if not path.is_file():
            raise UsageError(f"%workflow run: no workflow file at {args.file}")
        try:
            wf = Workflow.from_file(path, name=args.name, db=db)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"%workflow run: cannot read {args.file}: {exc}") from None
        params = _params(args.param)
        if args.dry_run:
            engine = wf.runner(db=db, params=params, namespace=self.shell.user_ns)
            print(explanation.plan_text(engine.dry_run(resume=args.resume, new=args.new)))
            return
        self._run(wf, db=db, params=params, resume=args.resume, new=args.new)

    def _run(self, wf: Workflow, **kwargs: Any) -> None:
        listener = LiveTable()
        ns = self.shell.user_ns
        engine = wf.runner(
            db=kwargs.get("db"), params=kwargs.get("params"), namespace=ns, listener=listener
        )
        engine.prepare(
            resume=kwargs.get("resume"), new=bool(kwargs.get("new")), fork=kwargs.get("fork")
        )
        engine.ledger.source = notebook_path(ns)
        if self._setting("store_code"):
            targets = [str(s.body) for s in engine.spec.steps if s.kind == "call"]
            codestore.save(engine.store, engine.run_id, codestore.notebook_functions(targets, ns))
        try:
            engine.execute()
        except WorkflowFailed as exc:
            said_once(exc, engine)
            raise
        finally:
            after_run(self.shell, engine, listener)

    def _submit(self, wf: Workflow, params: dict[str, Any], queue: str, db: str | None) -> None:
        """``%%workflow --submit``: queue a new run for a worker; say its id and what runs it."""
        from airun_nb.engine.worker import submit
        from airun_nb.gates.gate import db_flag
        from airun_nb.store.opening import open_store

        store = open_store(db)
        run_id = submit(
            wf.spec,
            store,
            params=params,
            queue=queue,
            namespace=self.shell.user_ns,
            store_code=bool(self._setting("store_code")),
        )
        option = "" if queue == "default" else f" --queue {queue}"
        print(
            f"queued run {run_id} of {wf.name} on queue {queue}; "
            f"`airun worker{option}{db_flag(store.path)}` runs it"
        )

    def _setting(self, name: str) -> Any:
        for conf in self.shell.configurables:
            if type(conf).__name__ == "Workflow" and hasattr(conf, name):
                return getattr(conf, name)
        return None

    @line_magic("workflow")
    def workflow_line(self, line: str) -> Any:
        """Run a workflow file, or look at and act on stored runs.

        ::

            %workflow run FILE [--name NAME] [--param KEY=VALUE ...] [--resume RUN | --new]
                               [--dry-run]
            %workflow runs [--workflow W] [--status S ...] [--since TIME] [--limit N]
            %workflow show RUN | resume [RUN] | rollback RUN | cancel RUN [--rollback]
                      | approvals | timeline RUN | traceback [RUN] [STEP] | why RUN
                      | diff RUN_A RUN_B [--step STEP] | history [TABLE] [RUN]

        Every command takes ``--db PATH`` (default: $AIRUN_DB or ./airun.duckdb); a store that
        does not exist is refused, not created (``run`` creates it).
        """
        _imports()
        words = _split("%workflow", line)
        db = None
        if "--db" in words:
            i = words.index("--db")
            if i + 1 >= len(words):
                raise UsageError("%workflow: --db needs a path")
            db = words[i + 1]
            del words[i : i + 2]
        if not words:
            raise UsageError(
                "%workflow: give a command: runs | show RUN | resume [RUN] | rollback RUN | cancel RUN "
                "| approvals | timeline RUN | traceback [RUN] [STEP] | history"
            )
        cmd, rest = words[0], words[1:]
        if cmd == "run":
            return self._run_file(rest, db)
        if cmd == "runs":
            p = _Parser(prog="workflow runs", add_help=False)
            p.add_argument("--workflow", "-w")
            p.add_argument("--status", "-s", action="append")
            p.add_argument("--since")
            p.add_argument("--limit", "-n", type=int)
            f = p.parse_args(rest)
            return history.runs(
                db, workflow=f.workflow, status=f.status, since=f.since, limit=f.limit
            )
        if cmd == "show":
            if len(rest) != 1:
                raise UsageError("%workflow show: give one run id")
            display(history.stored_run(rest[0], db))
            return None
        if cmd == "resume":
            if len(rest) > 1:
                raise UsageError("%workflow resume: give at most one run id")
            run_id = rest[0] if rest else _latest_unfinished(db)
            wf = Workflow.from_run(run_id, db=db)
            self._run(wf, db=db, resume=run_id)
            return None
        if cmd == "timeline":
            if len(rest) != 1:
                raise UsageError("%workflow timeline: give one run id")
            from airun_nb.history import timeline

            history.stored_run(rest[0], db)  # a clear error for an unknown run
            return timeline.draw(
                history.attempts(rest[0], db),
                gates=history.approvals(rest[0], db),
                title=f"run {rest[0]}",
            )
        if cmd == "approvals":
            store = open_store(db)
            rows = store.open_gates()
            if not rows:
                print("no approval gates are waiting")
            for row in rows:
                print(waiting_line(row))
            draw_gates(rows, store.path, self.shell.user_ns)
            return None
        if cmd == "cancel":
            rollback_first = "--rollback" in rest
            ids = [w for w in rest if w != "--rollback"]
            if len(ids) != 1:
                raise UsageError("%workflow cancel: give one run id (and --rollback to undo it)")
            from airun_nb.engine.cancel import cancel, describe

            done = cancel(
                ids[0],
                rollback=rollback_first,
                channel="notebook",
                db=db,
                namespace=self.shell.user_ns,
            )
            print(describe(done))
            return None
        if cmd == "traceback":
            if len(rest) > 2:
                raise UsageError("%workflow traceback: give [RUN] [STEP]")
            run_id = rest[0] if rest else _latest_failed(db)
            history.stored_run(run_id, db)  # a clear error for an unknown run
            found = history.tracebacks(run_id, db)
            if len(rest) == 2:
                found = {k: v for k, v in found.items() if k == rest[1]}
            if not found:
                print(f"run {run_id}: no failed attempt has a traceback")
            for step, tb in found.items():
                print(f"run {run_id} · step {step}\n{tb}\n")
            return None
        if cmd == "rollback":
            if len(rest) != 1:
                raise UsageError("%workflow rollback: give one run id")
            rollback(rest[0], db=db, namespace=self.shell.user_ns, listener=LiveTable())
            return None
        if cmd == "why":
            if len(rest) != 1:
                raise UsageError("%workflow why: give one run id")
            return explanation.why(rest[0], db)
        if cmd == "diff":
            step = None
            if "--step" in rest:
                i = rest.index("--step")
                if i + 1 >= len(rest):
                    raise UsageError("%workflow diff: --step needs a step id")
                step = rest[i + 1]
                del rest[i : i + 2]
            if len(rest) != 2:
                raise UsageError("%workflow diff: give two run ids (and --step STEP)")
            return rundiff.diff(rest[0], rest[1], step=step, db=db)
        if cmd == "history":
            what = rest[0] if rest else "runs"
            run = rest[1] if len(rest) > 1 else None
            funcs = {
                "runs": lambda: history.runs(db),
                "steps": lambda: history.steps(run, db),
                "attempts": lambda: history.attempts(run, db),
                "events": lambda: history.events(run, db),
            }
            if what not in funcs:
                raise UsageError(
                    f"%workflow history: unknown table {what!r} (runs, steps, attempts, events)"
                )
            return funcs[what]()
        raise UsageError(
            f"%workflow: unknown command {cmd!r} (runs | show RUN | resume [RUN] | rollback RUN | "
            "cancel RUN | approvals | timeline RUN | traceback [RUN] [STEP] | why RUN | diff A B | "
            "history)"
        )


def _latest_failed(db: str | None) -> str:
    last = last_result()
    if last is not None:
        return last.run_id
    found = open_store(db).latest_failed_run()
    if found is None:
        raise UsageError("%workflow traceback: no run has failed yet; give a run id")
    return found


def _latest_unfinished(db: str | None) -> str:
    found = open_store(db).latest_unfinished_run()
    if found is None:
        raise UsageError("%workflow resume: there is no unfinished run to resume")
    return found


def _cell_namer(ipython: Any) -> Any:
    def name(filename: str) -> str | None:
        found = ipython.compile.format_code_name(filename)
        return f"{found[0]} {found[1]}" if found else None  # "Cell In[5]", as IPython says

    return name


_namers: dict[int, Any] = {}


def load(ipython: Any) -> None:
    if id(ipython) not in _namers:
        _namers[id(ipython)] = _cell_namer(ipython)
        name_files_with(_namers[id(ipython)])
    ipython.register_magics(WorkflowMagics)
    if not any(type(c).__name__ == "Workflow" for c in ipython.configurables):
        conf = WorkflowSettings(parent=ipython)
        ipython.configurables.append(conf)


def unload(ipython: Any) -> None:  # pragma: no cover - IPython cannot unregister magics
    pass
