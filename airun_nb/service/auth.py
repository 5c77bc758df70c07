"""Who is asking: bearer tokens for the API, a session cookie after a token login for pages.

The API takes ``Authorization: Bearer <token>``; its read-only endpoints also accept the page's
session, so the page's live list can use them. Changes through the API need the bearer token
(no cookie), and page forms carry a per-session CSRF token.

A session lives on the server too: the cookie names a session id that the service keeps in
memory (:class:`Sessions`). Logging out ends it there, so a copy of the cookie taken before
is worth nothing afterwards; restarting the service ends every session. Failed logins and
failed bearer tokens are limited per client address (:class:`LoginLimiter`): past the limit
the client gets ``429`` until its oldest failure is old enough.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from airun_nb.engine.cancel import CancelError
from airun_nb.errors import AirunError, RunBusy, RunNotFound, StoreBusy, WorkflowFailed
from airun_nb.gates.gate import AlreadyDecided, ApprovalError, FormError
from airun_nb.history.readmodels import FilterError
from airun_nb.service import tokens
from airun_nb.service.tokens import Identity
from airun_nb.store.backend import Backend

SESSION_COOKIE = "airun_session"
bearer = HTTPBearer(auto_error=False, description="A token made by `airun token create USER`.")


class Refused(AirunError):
    """The caller may not do this (role, approver list, four-eyes)."""


class NotFound(AirunError):
    """No such run or gate."""


class TooLarge(AirunError):
    """The request or one of its fields is too large."""


class BadInput(AirunError):
    """The request is malformed."""


class TooManyAttempts(AirunError):
    """Too many failed logins from one client address."""


LOGIN_FAILURES = 10  # failed logins or tokens per client address ...
LOGIN_WINDOW = 300.0  # ... within this many seconds


class LoginLimiter:
    """Failed authentications per client address, within a sliding window."""

    def __init__(self, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        """:class:`TooManyAttempts` when ``client`` failed too often lately."""
        with self._lock:
            times = self._recent(client, time.monotonic())
            if len(times) >= self.limit:
                wait = int(self.window - (time.monotonic() - times[0])) + 1
                raise TooManyAttempts(
                    f"too many failed logins from {client}; try again in {wait} s"
                )

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())


class Sessions:
    """The page sessions alive on this server: session id -> token id."""

    def __init__(self) -> None:
        self._live: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self, token_id: str) -> str:
        sid = secrets.token_urlsafe(24)
        with self._lock:
            self._live[sid] = token_id
        return sid

    def token_of(self, sid: object) -> str | None:
        with self._lock:
            return self._live.get(sid) if isinstance(sid, str) else None

    def end(self, sid: object) -> None:
        with self._lock:
            if isinstance(sid, str):
                self._live.pop(sid, None)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limiter_of(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.logins
    return limiter


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def start_session(request: Request, token_id: str) -> None:
    """A fresh session for ``token_id`` (after a login)."""
    end_session(request)
    request.session.clear()
    request.session["sid"] = sessions_of(request).start(token_id)


def end_session(request: Request) -> None:
    """End the session on the server, then forget the cookie."""
    sessions_of(request).end(request.session.get("sid"))
    request.session.clear()


def status_of(exc: AirunError) -> int:
    """The HTTP status for an error the runtime raised."""
    if isinstance(exc, (NotFound, RunNotFound)):
        return 404
    if isinstance(exc, FormError):
        return 400
    if isinstance(exc, (AlreadyDecided, RunBusy, CancelError, WorkflowFailed)):
        return 409
    if isinstance(exc, (Refused, ApprovalError)):
        return 403
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, TooManyAttempts):
        return 429
    if isinstance(exc, StoreBusy):
        return 503
    if isinstance(exc, (BadInput, FilterError)):
        return 400
    return 400


def store_of(request: Request) -> Backend:
    store: Backend = request.app.state.store
    return store


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def api_identity(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Identity:
    """The caller of an API endpoint (401 for a missing, wrong or revoked token)."""
    store = store_of(request)
    if creds is not None:
        limiter = limiter_of(request)
        limiter.check(client_of(request))
        found = tokens.authenticate(store, creds.credentials)
        if found is None:
            limiter.failed(client_of(request))
            raise unauthorized("the token is not valid (unknown, malformed or revoked)")
        return found
    if request.method == "GET":
        session = session_identity(request)
        if session is not None:
            return session
    raise unauthorized("authentication required: send 'Authorization: Bearer <token>'")


def api_writer(identity: Identity = Depends(api_identity)) -> Identity:
    if not identity.may_decide:
        raise Refused(f"{identity.user} has role {identity.role} and may only read")
    return identity


def session_identity(request: Request) -> Identity | None:
    token_id = sessions_of(request).token_of(request.session.get("sid"))
    if not token_id:
        if request.session.get("sid"):
            request.session.clear()  # ended (logged out, or the service restarted)
        return None
    found = tokens.identity_of(store_of(request), str(token_id))
    if found is None:
        end_session(request)  # the token was revoked: the session ends with it
    return found


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def check_csrf(request: Request, sent: object) -> None:
    expected = request.session.get("csrf")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "the form is stale or was not sent by this site; reload the page")
