"""Server-rendered pages for people: log in with a token, see and decide gates, follow runs."""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from airun_nb.engine import cancel as cancellation
from airun_nb.errors import AirunError
from airun_nb.gates import gate, links
from airun_nb.history import readmodels as overview
from airun_nb.service import actions, tokens
from airun_nb.service.auth import (
    check_csrf,
    client_of,
    csrf_token,
    end_session,
    limiter_of,
    session_identity,
    start_session,
    status_of,
    store_of,
)
from airun_nb.service.tokens import Identity
from airun_nb.settings import file as settings

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def _when(value: str | None) -> str:
    """An ISO 8601 UTC time as people read it: 2026-01-31 12:00:05 UTC."""
    return f"{value[:19].replace('T', ' ')} UTC" if value else ""


templates.env.filters["when"] = _when


def _due(value: str | None) -> str:
    """How long until an ISO 8601 UTC deadline: ``due in 1h 58m`` (or ``overdue``)."""
    if not value:
        return ""
    left = int(datetime.fromisoformat(value).timestamp() - time.time())
    if left <= 0:
        return "overdue"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = max(rest // 60, 1) if not (days or hours) else rest // 60
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"]
    return "due in " + " ".join(parts[:2])


templates.env.filters["due"] = _due
templates.env.globals["request_id"] = lambda: uuid.uuid4().hex  # one per drawn form
FIELD_PREFIX = "field."
MAX_FORM = 64 * 1024


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/v1/") and request.url.path != "/openapi.json"


def _render(
    request: Request, name: str, who: Identity | None, code: int = 200, **ctx: Any
) -> Response:
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    return templates.TemplateResponse(
        request,
        name,
        {"who": who, "csrf": csrf_token(request), "flash": flash, **ctx},
        status_code=code,
    )


def error_page(request: Request, status: int, message: str) -> Response:
    who = session_identity(request) if "session" in request.scope else None
    return _render(request, "error.html", who, code=status, message=message)


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _safe_next(value: Any) -> str:
    text = str(value or "/")
    return text if text.startswith("/") and not text.startswith("//") else "/"


async def _form(request: Request) -> dict[str, Any]:
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > MAX_FORM:
        raise actions.TooLarge(f"the form is {int(size)} bytes; at most {MAX_FORM}")
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    check_csrf(request, data.get("csrf"))
    return data


@router.get("/", response_class=HTMLResponse)
def home() -> Response:
    return RedirectResponse("/approvals", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    return _render(request, "login.html", session_identity(request), next=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    data = await _form(request)
    store = store_of(request)
    limiter_of(request).check(client_of(request))
    found = await anyio.to_thread.run_sync(tokens.authenticate, store, data.get("token"))
    target = _safe_next(data.get("next"))
    if found is None:
        limiter_of(request).failed(client_of(request))
        return _render(
            request,
            "login.html",
            None,
            code=401,
            next=target,
            error="that token is not valid (unknown, mistyped or revoked)",
        )
    start_session(request, found.token_id)
    csrf_token(request)  # a fresh CSRF token for the new session
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _form(request)
    end_session(request)  # on the server: a copy of the cookie no longer works
    return RedirectResponse("/login", status_code=303)


def _by_urgency(gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Yours first, then the most urgent (no deadline last)."""
    return sorted(
        gates, key=lambda g: (not g["may_decide"], g["deadline"] is None, g["deadline"] or "")
    )


def next_gate(store: Any, user: str, after: tuple[str, str]) -> dict[str, str] | None:
    """The open gate ``user`` may decide that is most urgent, other than ``after``: where the
    page takes a busy approver once a decision is made (None: nothing else waits for them)."""
    for g in _by_urgency(overview.open_gates(store, user, decidable_only=True)):
        if (g["run_id"], g["gate_id"]) != after:
            due = f", {_due(g['deadline'])}" if g.get("deadline") else ""
            return {
                "url": f"/runs/{quote(g['run_id'])}/gates/{quote(g['gate_id'])}",
                "label": f"gate {g['gate_id']} of run {g['run_id']}{due}",
            }
    return None


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request) -> Response:
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    gates = _by_urgency(overview.open_gates(store_of(request), who.user))
    # the page's event stream starts where this list was read: no decision falls in between
    cursor = store_of(request).event_cursor()
    return _render(request, "approvals.html", who, gates=gates, cursor=cursor)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, status: str | None = None, workflow: str | None = None) -> Response:
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    runs = overview.runs(store_of(request), status=status or None, workflow=workflow or None)
    return _render(
        request,
        "runs.html",
        who,
        runs=runs,
        statuses=overview.RUN_STATUSES,
        status=status or "",
        workflow=workflow or "",
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> Response:
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    detail = overview.run_detail(store_of(request), run_id, user=who.user)
    return _render(
        request,
        "run.html",
        who,
        run=detail,
        cancellable=detail["status"] in cancellation.CANCELLABLE,
        may_cancel=who.may_decide and (who.role == "admin" or who.user == detail["launched_by"]),
        rejected=overview.rejected_steps(detail),
    )


def _notebook_link(path: Any) -> str | None:
    """The run's notebook on the Jupyter server of the settings' ``jupyter_url`` (None when
    unset or the path is not a notebook)."""
    if not path or not str(path).endswith(".ipynb"):
        return None
    base = settings.jupyter_url()
    if base is None:
        return None
    shown = Path(str(path))
    with contextlib.suppress(ValueError):
        shown = shown.relative_to(Path.cwd())
    return f"{base}/lab/tree/{quote(shown.as_posix().lstrip('/'))}"


templates.env.globals["notebook_link"] = _notebook_link


@router.get("/runs/{run_id}/timeline.svg")
def timeline_image(request: Request, run_id: str) -> Response:
    """The run's timeline (the one ``RunResult.timeline()`` draws) as an SVG picture, served
    so that it can never run a script (an image, with a closed content policy)."""
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    store = store_of(request)
    overview.runs_by_id(store, run_id)  # 404 for an unknown run
    try:
        from airun_nb.history import frames, timeline
    except ImportError:  # pragma: no cover - matplotlib ships with the service's extra
        raise actions.NotFound("the timeline needs matplotlib on the server") from None
    svg = timeline.draw(
        frames.attempts(run_id, store.path),
        gates=frames.approvals(run_id, store.path),
        title=f"run {run_id}",
    )._repr_svg_()
    return Response(
        svg,
        media_type="image/svg+xml",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "Cache-Control": "no-store",
        },
    )


@router.get("/docs", response_class=HTMLResponse)
def api_page(request: Request) -> Response:
    """The API's endpoints, drawn from its OpenAPI description with no script and nothing
    fetched from elsewhere (the usual OpenAPI UIs load theirs from a CDN)."""
    who = session_identity(request) if "session" in request.scope else None
    doc = request.app.openapi()
    schemas = (doc.get("components") or {}).get("schemas") or {}
    endpoints = []
    for path, ops in (doc.get("paths") or {}).items():
        for method, op in ops.items():
            params = [
                {
                    "name": p.get("name"),
                    "where": p.get("in"),
                    "type": _type_of(p.get("schema") or {}, schemas),
                    "required": bool(p.get("required")),
                    "description": p.get("description") or "",
                }
                for p in op.get("parameters") or []
            ]
            content = ((op.get("requestBody") or {}).get("content") or {}).get(
                "application/json"
            ) or {}
            body = _resolve(content.get("schema") or {}, schemas)
            fields = [
                {
                    "name": name,
                    "type": _type_of(f, schemas),
                    "description": f.get("description") or "",
                }
                for name, f in (body.get("properties") or {}).items()
            ]
            endpoints.append(
                {
                    "id": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary") or "",
                    "parameters": params,
                    "body": fields,
                }
            )
    return _render(
        request,
        "api.html",
        who,
        title=doc.get("info", {}).get("title", "API"),
        version=doc.get("info", {}).get("version", ""),
        description=[p for p in str(doc.get("info", {}).get("description", "")).split("\n\n")],
        endpoints=endpoints,
    )


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return dict(schemas.get(ref.rsplit("/", 1)[-1]) or {})
    return schema


def _type_of(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    schema = _resolve(schema, schemas)
    if "anyOf" in schema:
        kinds = [_type_of(s, schemas) for s in schema["anyOf"]]
        return " or ".join(k for k in kinds if k != "null") or "any"
    return str(schema.get("type") or "object")


@router.get("/runs/{run_id}/gates/{gate_id}", response_class=HTMLResponse)
def gate_page(request: Request, run_id: str, gate_id: str) -> Response:
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    row = gate.gate_row(store_of(request), run_id, gate_id)
    if row is None:
        raise actions.NotFound(f"run {run_id} has no gate '{gate_id}'")
    return _render(request, "gate.html", who, g=overview.gate_view(row, who.user))


@router.get("/link/{signed}", response_class=HTMLResponse)
def follow_link(request: Request, signed: str) -> Response:
    try:
        run_id, gate_id = links.verify(request.app.state.secret, signed)
    except links.LinkError as exc:
        expired = "expired" in exc.message
        return error_page(request, 410 if expired else 403, exc.message)
    return RedirectResponse(f"/runs/{quote(run_id)}/gates/{quote(gate_id)}", status_code=303)


@router.post("/runs/{run_id}/gates/{gate_id}/decide")
async def decide(request: Request, run_id: str, gate_id: str) -> Response:
    data = await _form(request)
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    decision = data.get("decision")
    if decision not in (gate.APPROVE, gate.REJECT):
        raise actions.BadInput("the form must say approve or reject")
    store = store_of(request)
    values = {k[len(FIELD_PREFIX) :]: v for k, v in data.items() if k.startswith(FIELD_PREFIX)}
    option = data.get("option") if decision == gate.APPROVE else None
    try:
        out = await anyio.to_thread.run_sync(
            lambda: actions.decide_gate(
                store,
                who,
                run_id,
                gate_id,
                str(decision),
                data.get("comment"),
                channel="web",
                form=values or None,
                option=option or None,
                request_id=data.get("request_id") or None,
            )
        )
    except AirunError as exc:
        request.session["flash"] = {"kind": "error", "text": exc.message, "code": status_of(exc)}
    else:
        following = await anyio.to_thread.run_sync(
            lambda: next_gate(store, who.user, (run_id, gate_id))
        )
        request.session["flash"] = {
            "kind": "ok",
            "text": decided_flash(out, who.user, store),
            "next": following or {},
        }
    return RedirectResponse(f"/runs/{quote(run_id)}/gates/{quote(gate_id)}", status_code=303)


def decided_flash(out: dict[str, Any], user: str, store: Any) -> str:
    """What the page says after a person's decision: still open (with the count), or the
    gate's decision and how the run continues."""
    run_id, gate_id = out["run_id"], out["gate_id"]
    if out.get("status") == "open":
        return (
            f"Your vote on gate {gate_id} of run {run_id} is recorded as {user}: {out['progress']}."
        )
    resume = gate.resume_command(run_id, store.path)
    from airun_nb.store.queue import continued_by

    worker = continued_by((store.run_row(run_id) or {}).get("source"))
    if worker is not None:  # a submitted run: a worker of its queue takes it on
        verb = "Approved" if out.get("decision") == "approved" else "Rejected"
        return f"{verb} gate {gate_id} of run {run_id} as {user}; {worker}."
    if out.get("decision") == "approved":
        chosen = f" with option {out['option']}" if out.get("option") else ""
        return (
            f"Approved gate {gate_id} of run {run_id} as {user}{chosen}. The run continues in its "
            f"notebook, or with `{resume}`."
        )
    return (
        f"Rejected gate {gate_id} of run {run_id} as {user}. The run rolls back when it "
        f"continues (in its notebook, or with `{resume}`)."
    )


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> Response:
    data = await _form(request)
    who = session_identity(request)
    if who is None:
        return _login_redirect(request)
    store = store_of(request)
    rollback = data.get("rollback") == "yes"
    try:
        out = await anyio.to_thread.run_sync(
            lambda: actions.cancel_run(
                store, who, run_id, rollback=rollback, comment=data.get("comment"), channel="web"
            )
        )
    except AirunError as exc:
        request.session["flash"] = {"kind": "error", "text": exc.message}
    else:
        request.session["flash"] = {"kind": "ok", "text": cancellation.describe(out) + "."}
    return RedirectResponse(f"/runs/{quote(run_id)}", status_code=303)
