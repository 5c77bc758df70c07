"""Who is asking: bearer tokens for the API, a session cookie after a token login for pages.

The API takes ``Authorization: Bearer <token>``; its read-only endpoints also accept the page's
session, so the page's live list can use them. Changes through the API need the bearer token
(no cookie), and page forms carry a per-session CSRF token.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from airun_nb.engine.cancel import CancelError
from airun_nb.errors import AirunError, RunBusy, RunNotFound, StoreBusy, WorkflowFailed
from airun_nb.gates.gate import AlreadyDecided, ApprovalError, FormError
from airun_nb.history.readmodels import FilterError
from airun_nb.service import tokens
from airun_nb.service.tokens import Identity
from airun_nb.store.database import Store

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
    if isinstance(exc, StoreBusy):
        return 503
    if isinstance(exc, (BadInput, FilterError)):
        return 400
    return 400


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def api_identity(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Identity:
    """The caller of an API endpoint (401 for a missing, wrong or revoked token)."""
    store = store_of(request)
    if creds is not None:
        found = tokens.authenticate(store, creds.credentials)
        if found is None:
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
    token_id = request.session.get("tid")
    if not token_id:
        return None
    found = tokens.identity_of(store_of(request), str(token_id))
    if found is None:
        request.session.clear()  # the token was revoked: the session ends with it
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
