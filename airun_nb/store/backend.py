"""The store's boundary: what the engine, the gates, history and the front ends may ask of a
store, whichever database holds it.

A backend is a handle on one store that offers the named reads of :class:`~.queries.Queries`,
the raw SQL reads history's analytic views run, the journal append that
:func:`~.transitions.commit` (the one writer) calls, and the output tables of DataFrame steps.
:class:`~.database.Store` is the backend for a DuckDB file; a server database is a second
implementation of this protocol, not a second code path through the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


@runtime_checkable
class Backend(Protocol):
    """A handle on one store."""

    path: Path

    # Holding the store: a block in which reads see every committed change and writes of this
    # handle are not interleaved with another process's (a lease on a file, a transaction).
    def session(
        self, purpose: str = "reading", *, fold: bool = True, peers: bool = True
    ) -> contextlib.AbstractContextManager[Any]: ...

    # Reads (history's SQL and the named reads of Queries are built on these).
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def query_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame: ...

    # Writes: durable when this returns; only store.transitions.commit calls it.
    def record_many(self, recs: Sequence[dict[str, Any]]) -> None: ...

    def flush(self) -> None: ...

    def release(self) -> None: ...

    # DataFrame outputs, kept as tables beside the runs.
    def put_table(self, name: str, table: pa.Table) -> None: ...

    def get_table(self, name: str) -> pa.Table: ...

    # Moving a run between stores (see store/transfer.py): table name -> the run's rows, its
    # output tables as Arrow under "__outputs__" and facts about the copy under "__meta__"
    # (``replace: true`` there: replace the store's copy when it is not executing). The export
    # never carries a pickle's signature (transfer.unseal); the import is one transaction and
    # refuses a run id the store already has with a StoreError.
    def export_run(self, run_id: str) -> dict[str, list[dict[str, Any]]]: ...

    def import_run(self, bundle: dict[str, list[dict[str, Any]]]) -> None: ...

    # The named reads (see store/queries.py).
    def run_row(self, run_id: str) -> dict[str, Any] | None: ...

    def step_rows(self, run_id: str, *statuses: str) -> list[dict[str, Any]]: ...

    def gate_row(self, run_id: str, gate_id: str) -> dict[str, Any] | None: ...

    def open_gates(self, run_id: str | None = None) -> list[dict[str, Any]]: ...

    # Queues (see store/queue.py): submitting a run, and the claims of workers.
    def queue_row(self, run_id: str) -> dict[str, Any] | None: ...

    def enqueue(
        self,
        run_id: str,
        queue: str = ...,
        *,
        records: Sequence[dict[str, Any]] = ...,
        trust_code: bool = ...,
    ) -> None: ...

    def claim_queued(self, queues: Sequence[str], worker: str, limit: int) -> list[str]: ...

    def end_claim(self, run_id: str, state: str, *, error: str | None = None) -> None: ...
