"""Opening a store: the one place that picks the backend for what ``db`` names.

A ``postgresql://`` (or ``postgres://``) URL opens the team store on a PostgreSQL server
(:class:`~airun_nb.store.postgres.backend.PostgresStore`, with the ``airun_nb[postgres]``
extra); anything else is the path of a DuckDB file (:class:`~airun_nb.store.database.Store`).
``None`` is the store in force (``AIRUN_DB``, ``%config Workflow.db``, the settings file).
"""

from __future__ import annotations

import os

from airun_nb.settings import environment as config
from airun_nb.settings.environment import StoreURL
from airun_nb.store.backend import Backend


def open_store(db: str | os.PathLike[str] | None = None, *, create: bool = True) -> Backend:
    """The store ``db`` names; ``create=False`` (read commands) refuses to make a new file."""
    where = config.resolve_db(db)
    if isinstance(where, StoreURL):
        from airun_nb.store.postgres.backend import PostgresStore

        return PostgresStore.open(where, create=create)
    from airun_nb.store.database import Store

    return Store.open(where, create=create)
