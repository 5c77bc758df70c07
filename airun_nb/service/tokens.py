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
from airun_nb.store import transitions
from airun_nb.store.backend import Backend

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


def create(store: Backend, user: str, *, role: str = DEFAULT_ROLE, created_by: str) -> str:
    """Make a token for ``user``; return it (the only time it is shown)."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise TokenError(
            f"user name {user!r} is not valid (letters, digits and . _ @ : + -, up to 64)"
        )
    if role not in ROLES:
        raise TokenError(f"role {role!r} is not one of {', '.join(ROLES)}")
    token_id = secrets.token_hex(4)
    token = f"airun_{token_id}_{secrets.token_urlsafe(32)}"
    transitions.commit(
        store,
        [
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
        ],
    )
    store.flush()
    return token


def revoke(store: Backend, who: str) -> list[str]:
    """Revoke the token with this id, or every live token of this user; return the ids."""
    with store.session("revoking a token"):
        rows = store.live_tokens_of(who)
        if not rows:
            raise TokenError(f"no live token with id or user '{who}' in {store.path}")
        now = time.time()
        transitions.commit(
            store,
            [
                {
                    **{k: v for k, v in r.items() if k != "created_at"},
                    "t": "token",
                    "created_at": _epoch(r["created_at"]),
                    "revoked_at": now,
                }
                for r in rows
            ],
        )
    return [str(r["token_id"]) for r in rows]


def listing(store: Backend) -> list[dict[str, Any]]:
    """Every token (never its secret): id, user, role, created, revoked."""
    return store.token_listing()


def authenticate(store: Backend, token: str | None) -> Identity | None:
    """The identity a token stands for, or None (missing, malformed, unknown or revoked)."""
    if not token:
        return None
    m = _SHAPE.fullmatch(token.strip())
    if m is None:
        return None
    row = store.token_row(m.group(1))
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(str(row["token_hash"]), _digest(token.strip())):
        return None
    return Identity(str(row["user_name"]), str(row["role"]), m.group(1))


def identity_of(store: Backend, token_id: str) -> Identity | None:
    """The identity behind a live token id (for a session that logged in with it)."""
    row = store.token_row(token_id)
    if row is None or row["revoked_at"] is not None:
        return None
    return Identity(str(row["user_name"]), str(row["role"]), token_id)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=timezone.utc).timestamp()
