"""``--db``: where the store is, a DuckDB file's path or a team store's ``postgresql://`` URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from airun_nb.settings.environment import StoreURL, resolve_db


class StoreLocation(click.ParamType):
    """A store's path, or the URL of a team store on a PostgreSQL server."""

    name = "PATH|URL"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Path | StoreURL:
        return value if isinstance(value, (Path, StoreURL)) else resolve_db(str(value))


STORE = StoreLocation()
