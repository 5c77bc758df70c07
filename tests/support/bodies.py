"""Step bodies that count themselves: each call appends ``<run> <step> <pid>`` to the file
named by ``AIRUN_TEST_BODIES``, from whichever process runs it, so a test can prove that no
finished step ran twice. A step named in the file ``<bodies>.fail`` raises instead (an injected
failure that the test turns on and off)."""

from __future__ import annotations

import os
from pathlib import Path


def _body(run: str, step: str) -> str:
    path = os.environ.get("AIRUN_TEST_BODIES")
    if path:
        fail = Path(path + ".fail")
        if fail.exists() and fail.read_text().strip() == step:
            raise RuntimeError(f"injected failure in {step}")
        with open(path, "a") as fh:
            fh.write(f"{run} {step} {os.getpid()}\n")
    return step


def load(run: str) -> str:
    return _body(run, "load")


def publish(run: str) -> str:
    return _body(run, "publish")


def unload(run: str) -> None:
    _body(run, "unload")
