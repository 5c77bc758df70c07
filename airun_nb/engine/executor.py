"""Where step code runs: in this process (``local``) or on a Dask cluster (``dask``).

With ``executor: dask`` (workflow-wide or on a step) a ``call`` step's function and its
arguments are shipped to the cluster and its result comes back; the kernel stays the only writer
of the store, so checkpointing, retries, timeouts and resume behave exactly as they do locally.
The client is the one the notebook created (``distributed.Client(...)``), else one connected to
``AIRUN_DASK_SCHEDULER``. Inline ``python`` and ``sql`` steps always run in the kernel: they read
the notebook's variables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.settings.environment import current as settings_now


class ExecutorError(AirunError):
    """No Dask cluster to run on."""


def _client() -> Any:
    try:
        from distributed import Client, get_client
    except ImportError:
        raise ExecutorError(
            "executor: dask needs dask.distributed (pip install 'airun_nb[dask]')"
        ) from None
    try:
        return get_client()
    except ValueError:
        address = settings_now().dask_scheduler
        if not address:
            raise ExecutorError(
                "executor: dask found no Dask client: create one in the notebook "
                "(distributed.Client(...)) or set AIRUN_DASK_SCHEDULER"
            ) from None
        return Client(address)


def submit(fn: Callable[..., Any], kwargs: dict[str, Any], *, key: str) -> Any:
    """Run ``fn(**kwargs)`` on the cluster and wait for its result (errors re-raised here)."""
    client = _client()
    future = client.submit(fn, **kwargs, key=key, pure=False)
    try:
        return future.result()
    finally:
        future.release()
