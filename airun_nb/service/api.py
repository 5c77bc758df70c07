"""The REST API, version 1: runs, gates, decisions, cancel and the event stream."""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from airun_nb import __version__
from airun_nb.gates import gate
from airun_nb.history import readmodels as overview
from airun_nb.service import actions, events, guard
from airun_nb.service.auth import BadInput, TooLarge, api_identity, api_writer, store_of
from airun_nb.service.tokens import Identity

router = APIRouter(prefix="/v1")
MAX_BODY = 64 * 1024


class DecisionBody(BaseModel):
    comment: str | None = Field(None, description="Kept with the decision and in the audit trail.")
    form: dict[str, Any] | None = Field(
        None, description="Values of the gate's form fields, by name (checked by the server)."
    )
    option: str | None = Field(None, description="The option chosen (approve only).")
    request_id: str | None = Field(
        None,
        description="The client's id for this request: sending the same id again returns the "
        "first answer instead of 409 (a retry after a lost response).",
    )


class CancelBody(BaseModel):
    rollback: bool = Field(False, description="Undo the run's finished steps before cancelling.")
    comment: str | None = None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def _json_body(request: Request) -> dict[str, Any]:
    """The JSON object sent, or {} for an empty body; one-line errors for anything else."""
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > MAX_BODY:
        raise TooLarge(f"request body is {int(size)} bytes; at most {MAX_BODY}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise TooLarge(f"request body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    if guard.json_depth(raw) > guard.MAX_JSON_DEPTH:
        raise BadInput(f"the JSON body nests deeper than {guard.MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"malformed JSON body: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise BadInput('the JSON body must be an object, e.g. {"comment": "..."}')
    return doc


def _fields(doc: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise BadInput(f"unknown field '{extra[0]}' (allowed: {', '.join(sorted(allowed))})")


@router.get("/health", summary="Service health (no token needed)")
def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/runs", summary="Runs, newest first")
def list_runs(
    request: Request,
    workflow: str | None = Query(None, max_length=200),
    status: str | None = Query(None, description=f"One of {', '.join(overview.RUN_STATUSES)}"),
    since: str | None = Query(None, description="Runs created at or after this ISO 8601 time"),
    limit: int = Query(100, ge=1, le=overview.MAX_RUNS),
    who: Identity = Depends(api_identity),
) -> dict[str, Any]:
    store = store_of(request)
    return {
        "runs": overview.runs(store, workflow=workflow, status=status, since=since, limit=limit)
    }


@router.get("/runs/{run_id}", summary="One run: its steps, attempts and gates")
def get_run(run_id: str, request: Request, who: Identity = Depends(api_identity)) -> dict[str, Any]:
    return overview.run_detail(store_of(request), run_id, user=who.user)


@router.get("/approvals", summary="Open gates the caller may decide")
def list_approvals(request: Request, who: Identity = Depends(api_identity)) -> dict[str, Any]:
    gates = overview.open_gates(store_of(request), who.user, decidable_only=True)
    return {"user": who.user, "approvals": gates if who.may_decide else []}


async def _decide(request: Request, who: Identity, run_id: str, gate_id: str, decision: str) -> Any:
    doc = await _json_body(request)
    allowed = {"comment", "form", "request_id"} | (
        {"option"} if decision == gate.APPROVE else set()
    )
    _fields(doc, allowed)
    store = store_of(request)
    return await anyio.to_thread.run_sync(
        lambda: actions.decide_gate(
            store,
            who,
            run_id,
            gate_id,
            decision,
            doc.get("comment"),
            channel="api",
            form=doc.get("form"),
            option=doc.get("option"),
            request_id=doc.get("request_id"),
        )
    )


@router.post(
    "/runs/{run_id}/gates/{gate_id}/approve",
    summary="Approve a gate (with its form and option; one vote a person, first decision wins)",
    openapi_extra=_body_schema(DecisionBody),
)
async def approve(
    run_id: str, gate_id: str, request: Request, who: Identity = Depends(api_writer)
) -> Any:
    return await _decide(request, who, run_id, gate_id, gate.APPROVE)


@router.post(
    "/runs/{run_id}/gates/{gate_id}/reject",
    summary="Reject a gate (the run rolls back when it continues)",
    openapi_extra=_body_schema(DecisionBody),
)
async def reject(
    run_id: str, gate_id: str, request: Request, who: Identity = Depends(api_writer)
) -> Any:
    return await _decide(request, who, run_id, gate_id, gate.REJECT)


@router.post(
    "/runs/{run_id}/cancel",
    summary="Cancel a waiting, failed or interrupted run",
    openapi_extra=_body_schema(CancelBody),
)
async def cancel(run_id: str, request: Request, who: Identity = Depends(api_writer)) -> Any:
    doc = await _json_body(request)
    _fields(doc, {"rollback", "comment"})
    rollback = doc.get("rollback", False)
    if not isinstance(rollback, bool):
        raise BadInput("rollback must be true or false")
    store = store_of(request)
    return await anyio.to_thread.run_sync(
        lambda: actions.cancel_run(
            store, who, run_id, rollback=rollback, comment=doc.get("comment"), channel="api"
        )
    )


@router.get(
    "/events",
    summary="Server-Sent Events: every recorded transition (runs, steps, gates)",
    response_description="text/event-stream of `transition` events with JSON data",
)
async def stream_events(
    request: Request,
    run: str | None = Query(None, description="Only this run's transitions"),
    since: str | None = Query(None, description="Start at this ISO 8601 time (default: now)"),
    after: int | None = Query(
        None, description="Start after this event number (as Last-Event-ID does)", ge=0
    ),
    who: Identity = Depends(api_identity),
) -> Any:
    return events.response(request, store_of(request), run=run, since=since, after=after)
