"""Service tokens: created once, stored only as a hash, revocable.

A token reads ``airun_<id>_<secret>``; the store keeps its id, the SHA-256 of the whole token,
the user it stands for and a role. The user is the trusted identity of every request made with
it (approver lists, four-eyes, audit). Roles: ``viewer`` reads, ``approver`` (the default) also
decides gates and cancels runs it launched, ``admin`` may cancel any run.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.store.database import Store

ROLES = ("viewer", "approver", "admin")
DEFAULT_ROLE = "approver"
_SHAPE = re.compile(r"^airun_([0-9a-f]{8})_([A-Za-z0-9_\-]{20,})$")
_USER = re.compile(r"^[A-Za-z0-9._@:+\-]{1,64}$")


class TokenError(AirunError):
    """A token cannot be created or revoked as asked."""


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: the token's user and role."""

    user: str
    role: str
    token_id: str

    @property
    def may_decide(self) -> bool:
        return self.role in ("approver", "admin")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(store: Store, user: str, *, role: str = DEFAULT_ROLE, created_by: str) -> str:
    """Make a token for ``user``; return it (the only time it is shown)."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise TokenError(
            f"user name {user!r} is not valid (letters, digits and . _ @ : + -, up to 64)"
        )
    if role not in ROLES:
        raise TokenError(f"role {role!r} is not one of {', '.join(ROLES)}")
    token_id = secrets.token_hex(4)
    token = f"airun_{token_id}_{secrets.token_urlsafe(32)}"
    store.record(
        {
            "t": "token",
            "token_id": token_id,
            "token_hash": _digest(token),
            "user_name": user,
            "role": role,
            "created_at": time.time(),
            "created_by": created_by,
            "revoked_at": None,
        }
    )
    store.flush()
    return token


def revoke(store: Store, who: str) -> list[str]:
    """Revoke the token with this id, or every live token of this user; return the ids."""
    with store.session("revoking a token"):
        rows = store.query_dicts(
            "SELECT * FROM tokens WHERE (token_id = ? OR user_name = ?) AND revoked_at IS NULL",
            [who, who],
        )
        if not rows:
            raise TokenError(f"no live token with id or user '{who}' in {store.path}")
        now = time.time()
        store.record_many(
            [
                {
                    **{k: v for k, v in r.items() if k != "created_at"},
                    "t": "token",
                    "created_at": _epoch(r["created_at"]),
                    "revoked_at": now,
                }
                for r in rows
            ]
        )
    return [str(r["token_id"]) for r in rows]


def listing(store: Store) -> list[dict[str, Any]]:
    """Every token (never its secret): id, user, role, created, revoked."""
    return store.query_dicts(
        "SELECT token_id, user_name, role, created_at, created_by, revoked_at FROM tokens "
        "ORDER BY created_at"
    )


def authenticate(store: Store, token: str | None) -> Identity | None:
    """The identity a token stands for, or None (missing, malformed, unknown or revoked)."""
    if not token:
        return None
    m = _SHAPE.fullmatch(token.strip())
    if m is None:
        return None
    rows = store.query_dicts(
        "SELECT token_hash, user_name, role, revoked_at FROM tokens WHERE token_id = ?",
        [m.group(1)],
    )
    if not rows or rows[0]["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(str(rows[0]["token_hash"]), _digest(token.strip())):
        return None
    return Identity(str(rows[0]["user_name"]), str(rows[0]["role"]), m.group(1))


def identity_of(store: Store, token_id: str) -> Identity | None:
    """The identity behind a live token id (for a session that logged in with it)."""
    rows = store.query_dicts(
        "SELECT user_name, role FROM tokens WHERE token_id = ? AND revoked_at IS NULL",
        [token_id],
    )
    if not rows:
        return None
    return Identity(str(rows[0]["user_name"]), str(rows[0]["role"]), token_id)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=timezone.utc).timestamp()
