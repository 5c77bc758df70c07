"""A PostgreSQL driver's exception as one line that says what failed and where.

The URL in every message is the redacted one (``postgresql://bob:***@host/db``); the driver's
own text is reduced to its first line, with any password in it replaced.
"""

from __future__ import annotations

from airun_nb.errors import StoreBusy, StoreError
from airun_nb.settings.environment import redact_url

INSTALL = "pip install 'airun_nb[postgres]'"


def missing_driver(where: str, module: str) -> StoreError:
    return StoreError(
        f"{where} is a PostgreSQL store, and the PostgreSQL driver ({module}) is not "
        f"installed: {INSTALL}"
    )


def fault(exc: BaseException, where: str, doing: str) -> StoreError:
    """``exc`` (a psycopg or ADBC error) met while ``doing`` something with the store."""
    text = redact_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return StoreError(
            f"cannot {doing} {where}: the server refused the password (give it in the URL, "
            "PGPASSWORD or ~/.pgpass)"
        )
    if "does not exist" in low and "database" in low:
        return StoreError(f"cannot {doing} {where}: {text}; create it first (createdb)")
    if "lock timeout" in low or "canceling statement due to lock timeout" in low:
        return StoreBusy(f"cannot {doing} {where}: another process holds it; {text}")
    if any(
        s in low
        for s in (
            "connection refused",
            "could not connect",
            "connection failed",
            "no such file or directory",
            "could not translate host name",
            "timeout expired",
            "server closed the connection",
            "terminating connection",
            "connection is closed",
            "the connection is lost",
            "consuming input failed",
            "connection already closed",
            "couldn't get a connection",
        )
    ):
        return StoreError(
            f"cannot {doing} {where}: the server cannot be reached ({text}); what was recorded "
            "is kept on the server, resume the run when it is back"
        )
    return StoreError(f"cannot {doing} {where}: {text}")
