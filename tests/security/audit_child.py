"""Runs one workflow under the agent policy with a Python audit hook, and prints what it saw.

Usage: ``python audit_child.py WORKFLOW.yaml...`` from the workspace folder, with ``AIRUN_*`` set
by the caller; the workflows run one after the other, each as a new run. The hook records every ``subprocess.Popen``, ``os.system``, ``os.exec*`` and
``os.posix_spawn``, every ``exec`` / ``compile`` of a step's code, every ``open`` for writing
and every ``socket.connect``, from the moment each workflow is parsed; one report per workflow
(its status and its events) is printed as JSON on the last line of standard output.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import airun_nb  # noqa: F401  (the runtime's own imports happen before the hook)
from airun_nb import Workflow
from airun_nb.errors import AirunError

SEEN: list[list[str]] = []
_ON = [False]
_PROCESS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _ON[0]:
        return
    if event in _PROCESS:
        SEEN.append([event, repr(args)[:200]])
    elif event in ("exec", "compile"):
        code = args[0]
        name = getattr(code, "co_filename", None) if event == "exec" else str(args[1])
        if name is not None and str(name).startswith("<step"):
            SEEN.append([event, str(name)])
    elif event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            SEEN.append(["open", os.path.realpath(os.fsdecode(path))])
    elif event == "socket.connect":
        SEEN.append([event, repr(args[1])[:200]])


def ok(**kwargs: Any) -> str:
    """The notebook's own function: what `call: ok` reaches."""
    return "ok"


def main() -> None:
    texts = []
    for path in sys.argv[1:]:
        with open(path) as f:
            texts.append(f.read())
    sys.addaudithook(_hook)
    reports = []
    for text in texts:
        SEEN.clear()
        _ON[0] = True
        status = "refused"
        try:
            wf = Workflow.from_yaml(text)
            status = wf.run(raise_on_failure=False, namespace={"ok": ok}, new=True).status
        except AirunError as exc:
            status = f"refused: {exc.message}"
        finally:
            _ON[0] = False
        reports.append({"status": status, "events": list(SEEN)})
    sys.stdout.write(json.dumps(reports) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
