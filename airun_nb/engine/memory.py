"""Garbage collection paused while a run plans, and its planning objects kept out of scans."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while planning allocates its many small objects.

    What planning built lives as long as the run, so it is also frozen (kept out of the
    collector's scans) until the run ends, instead of being rescanned the moment collection
    resumes. :func:`gc_release` unfreezes it.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def gc_release() -> None:
    gc.unfreeze()
