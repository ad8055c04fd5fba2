"""Batch files over HTTP (partner token with points:earn):

    POST /imports          body: text/csv (or application/x-ndjson), up to 50 MB -> 202 {"id", "status"}
    GET  /imports/{id}     -> {"id", "status", "lines", "applied", "replayed", "rejected", "errors"}

The file is stored and applied in the background (`loyalty.imports`, run by `serve`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import DomainError
from gateway import authz
from gateway.oauth.auth import Principal
from gateway.ratelimit import per_caller
from gateway.settlement_http import _caller, _domain_error, _error
from loyalty import imports
from loyalty.imports import MAX_BYTES
from partners.imports import ImportRecord, LineError


def _partner(caller: Principal) -> Any:
    if (
        caller.kind != "partner"
        or caller.partner_id is None
        or not authz.allows(caller, "points:earn")
    ):
        return None
    return caller.partner_id


def _json(record: ImportRecord, errors: list[LineError] | None = None) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "status": record.status,
        "lines": record.lines,
        "processed": record.position,
        "applied": record.applied,
        "replayed": record.replayed,
        "rejected": record.rejected,
        "errors": [{"line": e.line, "code": e.code, "message": e.message} for e in errors or []],
    }


async def upload(request: Request) -> Response:
    """Store a partner's batch file and queue it."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    partner_id = _partner(caller)
    if partner_id is None:
        return _error(403, "FORBIDDEN", "imports need a partner token with points:earn")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BYTES):
        return _error(413, "PAYLOAD_TOO_LARGE", f"at most {MAX_BYTES:,} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BYTES:
            return _error(413, "PAYLOAD_TOO_LARGE", f"at most {MAX_BYTES:,} bytes")
    rt = request.app.state.runtime
    try:
        record = await imports.submit(
            rt,
            partner_id=partner_id,
            actor=caller.client_id,
            body=bytes(data),
            content_type=request.headers.get("content-type", ""),
        )
    except DomainError as exc:
        return _domain_error(exc)
    request.app.state.import_wake.set()
    return JSONResponse({"id": str(record.id), "status": record.status}, status_code=202)


async def read(request: Request) -> Response:
    """An import's status, counts and rejected lines (the partner's own)."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    partner_id = _partner(caller)
    if partner_id is None:
        return _error(403, "FORBIDDEN", "imports need a partner token with points:earn")
    try:
        record, errors = await imports.status(
            request.app.state.runtime, partner_id=partner_id, import_id=request.path_params["id"]
        )
    except DomainError as exc:
        return _domain_error(exc)
    return JSONResponse(_json(record, errors))


def routes() -> list[Route]:
    return [
        Route("/imports", per_caller(upload), methods=["POST"]),
        Route("/imports/{id}", per_caller(read), methods=["GET"]),
    ]
