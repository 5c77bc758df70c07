"""Headless notebook execution (nbclient), for ``airun run NOTEBOOK`` and for CI."""

from __future__ import annotations

import contextlib
import keyword
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from airun_nb.errors import AirunError


class NotebookFailed(AirunError):
    """A cell of a headless notebook run raised."""


@dataclass
class NotebookRun:
    path: Path
    output: Path
    started: float
    seconds: float


def run_notebook(
    path: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    timeout: float | None = 600,
    kernel_name: str = "python3",
    env: dict[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> NotebookRun:
    """Execute every cell of a notebook in a fresh kernel, in the notebook's folder.

    ``parameters`` are injected as papermill does: a cell of ``NAME = value`` lines (tagged
    ``injected-parameters``) right after the cell tagged ``parameters``, or first when there is
    none. The executed notebook is written to ``output`` (default: ``<name>.out.ipynb`` beside
    it) even when a cell fails; a failure raises :class:`NotebookFailed` naming the cell.
    """
    src = Path(path)
    if not src.exists():
        raise NotebookFailed(f"no notebook at {src}")
    try:
        nb = nbformat.read(src, as_version=4)
    except Exception as exc:
        raise NotebookFailed(f"{src} is not a readable notebook: {exc}") from None
    if parameters:
        inject_parameters(nb, parameters)
    out = Path(output) if output else src.with_name(src.stem + ".out.ipynb")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NotebookFailed(
            f"cannot write the executed notebook to {out}: {exc.strerror}"
        ) from None
    started = time.time()
    old_env = dict(os.environ)
    if env:
        os.environ.update(env)
    # IPC sockets in a private folder: no TCP port, so the kernel has nothing to warn about
    # ("Kernel is running over TCP without encryption") and nothing listens on the network.
    sockets = tempfile.mkdtemp(prefix="airun-kernel-")
    km = AsyncKernelManager(
        kernel_name=kernel_name, transport="ipc", ip=os.path.join(sockets, "kernel")
    )
    km.connection_file = os.path.join(sockets, "kernel.json")
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(src.parent.resolve())}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        raise NotebookFailed(_cell_failure(nb, exc)) from None
    except CellTimeoutError:
        raise NotebookFailed(f"{src}: a cell ran longer than {timeout} s") from None
    except DeadKernelError:
        raise NotebookFailed(f"{src}: the kernel died while running the notebook") from None
    finally:
        _shutdown(km)  # a kernel manager passed in is not shut down by nbclient
        os.environ.clear()
        os.environ.update(old_env)
        nbformat.write(nb, out)
        shutil.rmtree(sockets, ignore_errors=True)
    return NotebookRun(src, out, started, time.time() - started)


def inject_parameters(nb: nbformat.NotebookNode, parameters: Mapping[str, Any]) -> None:
    """Insert the parameters cell papermill would: after the ``parameters``-tagged cell (it
    replaces an earlier injected one), else first."""
    for name in parameters:
        if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
            raise NotebookFailed(f"parameter {name!r} is not a Python name")
    lines = ["# Parameters"] + [f"{k} = {v!r}" for k, v in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    nb.cells = [c for c, t in zip(nb.cells, tags, strict=True) if "injected-parameters" not in t]
    at = next(
        (i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 0
    )
    nb.cells.insert(at, cell)


def _shutdown(km: AsyncKernelManager) -> None:
    """Stop the kernel and wait for it (its store folds its journal as it exits)."""
    with contextlib.suppress(Exception):
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=False)


def _cell_failure(nb: nbformat.NotebookNode, exc: CellExecutionError) -> str:
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                return f"cell {i + 1} failed: {o.get('ename')}: {o.get('evalue')}"
    return f"a cell failed: {exc.ename}: {exc.evalue}"
