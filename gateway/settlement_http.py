"""Settlement files over HTTP (bearer token): statement CSV and PDF invoice, the liability CSV,
and reconciliation uploads (files up to 5 MB, beyond the GraphQL body cap).

    GET  /settlement/periods/{period_id}/statements/{partner_id}.csv
    GET  /settlement/periods/{period_id}/statements/{partner_id}.pdf
    GET  /settlement/liability.csv                              (operator)
    POST /settlement/periods/{period_id}/reconciliations[?partner_id=...]   body: text/csv

The operator may fetch any partner's; a partner client with `settlement:read` only its own.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import DomainError
from gateway.oauth.auth import AuthError, Principal, authenticate
from gateway.ratelimit import per_caller
from settlement import exports, reconciliation
from settlement.reconciliation import MAX_BYTES


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _caller(request: Request) -> Principal | JSONResponse:
    try:
        principal = await authenticate(request)
    except AuthError as exc:
        return _error(401, exc.code, exc.message)
    if principal is None:
        return _error(401, "UNAUTHENTICATED", "send a Bearer access token")
    return principal


def _may_see(principal: Principal, partner_id: uuid.UUID) -> bool:
    if "operator" in principal.scopes:
        return True
    return (
        principal.kind == "partner"
        and "settlement:read" in principal.scopes
        and principal.partner_id == partner_id
    )


def _ids(request: Request) -> tuple[uuid.UUID, uuid.UUID] | None:
    try:
        return (
            uuid.UUID(request.path_params["period_id"]),
            uuid.UUID(request.path_params["partner_id"]),
        )
    except ValueError:
        return None


async def statement_file(request: Request) -> Response:
    """A partner's statement as CSV or PDF."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    ids = _ids(request)
    if ids is None or not _may_see(caller, ids[1]):
        return _error(404, "NOT_FOUND", "no such statement")
    period_id, partner_id = ids
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "pdf"):
        return _error(404, "NOT_FOUND", "statements come as .csv or .pdf")
    try:
        async with request.app.state.engine.connect() as conn:
            if fmt == "csv":
                body = await exports.statement_csv(conn, period_id=period_id, partner_id=partner_id)
                return Response(
                    body,
                    media_type="text/csv; charset=utf-8",
                    headers={
                        "Content-Disposition": f'attachment; filename="statement-{period_id}-{partner_id}.csv"'
                    },
                )
            pdf = await exports.statement_pdf(conn, period_id=period_id, partner_id=partner_id)
    except DomainError as exc:
        return _error(404 if exc.code.endswith("NOT_FOUND") else 422, exc.code, exc.message)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="statement-{period_id}-{partner_id}.pdf"'
        },
    )


async def liability_file(request: Request) -> Response:
    """The points liability by issuer, now and per closed period (operator)."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    if "operator" not in caller.scopes:
        return _error(403, "FORBIDDEN", "the liability report is the operator's")
    async with request.app.state.engine.connect() as conn:
        body = await exports.liability_csv(conn)
    return Response(body, media_type="text/csv; charset=utf-8")


async def upload_reconciliation(request: Request) -> Response:
    """Match a partner's CSV record of a period; returns the report (stored) as JSON."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    try:
        period_id = uuid.UUID(request.path_params["period_id"])
        if "operator" in caller.scopes:
            partner_id = uuid.UUID(request.query_params.get("partner_id", ""))
        elif caller.kind == "partner" and "settlement:read" in caller.scopes and caller.partner_id:
            partner_id = caller.partner_id
        else:
            return _error(403, "FORBIDDEN", "this needs the settlement:read scope")
    except ValueError:
        return _error(
            422, "VALIDATION", "period id (and, for the operator, partner_id) must be ids"
        )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BYTES):
        return _error(413, "PAYLOAD_TOO_LARGE", f"at most {MAX_BYTES:,} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BYTES:
            return _error(413, "PAYLOAD_TOO_LARGE", f"at most {MAX_BYTES:,} bytes")
    try:
        async with request.app.state.engine.begin() as conn:
            report = await reconciliation.reconcile(
                conn,
                period_id=period_id,
                partner_id=partner_id,
                data=bytes(data),
                actor=caller.client_id,
                filename=request.headers.get("x-filename"),
            )
    except DomainError as exc:
        status = 404 if exc.code.endswith("NOT_FOUND") else 422
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message, **exc.details}}, status_code=status
        )
    return JSONResponse(
        {
            "id": str(report.id),
            "matched": report.matched,
            "mismatched": report.mismatched,
            "missing_in_ledger": report.missing_in_ledger,
            "missing_in_file": report.missing_in_file,
            "lines": [
                {
                    "status": x.status,
                    "order_ref": x.order_ref,
                    "kind": x.kind,
                    "file_points": x.file_points,
                    "ledger_points": x.ledger_points,
                    "file_amount": str(x.file_amount.amount) if x.file_amount else None,
                    "ledger_amount": str(x.ledger_amount.amount) if x.ledger_amount else None,
                    "file_lines": x.file_lines,
                }
                for x in report.lines
            ],
        },
        status_code=201,
    )


def routes() -> list[Route]:
    return [
        Route(
            "/settlement/periods/{period_id}/statements/{partner_id}.{fmt:str}",
            per_caller(statement_file),
            methods=["GET"],
        ),
        Route("/settlement/liability.csv", per_caller(liability_file), methods=["GET"]),
        Route(
            "/settlement/periods/{period_id}/reconciliations",
            per_caller(upload_reconciliation),
            methods=["POST"],
        ),
    ]
