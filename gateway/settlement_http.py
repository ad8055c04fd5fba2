"""Settlement files over HTTP (bearer token): statement CSV and PDF invoice, the liability CSV,
and reconciliation uploads (files up to 5 MB, beyond the GraphQL body cap).

    GET  /settlement/periods/{period_id}/statements/{partner_id}.csv
    GET  /settlement/periods/{period_id}/statements/{partner_id}.pdf
    GET  /settlement/liability.csv                              (operator)
    POST /settlement/periods/{period_id}/reconciliations[?partner_id=...]   body: text/csv
    GET  /settlement/periods/{period_id}/reconciliations/{reconciliation_id}
         [?status=mismatched,missing_in_file&after=SEQ&limit=N]

The operator may fetch any partner's; a partner client with `settlement:read` only its own.

A reconciliation report can hold 100,000 lines, so neither the upload's answer nor a read
returns it whole: both give the counts and one page of lines (`limit`, default 100, at most
1,000, optionally only some `status`es), and `next_after` (with `next`, the URL of the next
page) until the last page. A partner keeps at most RECONCILIATION_MAX_PER_PERIOD reports per
period: beyond, the upload is refused with 409 LIMIT_EXCEEDED and nothing is stored.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import DomainError, ErrorCode
from gateway import authz
from gateway.oauth.auth import AuthError, Principal, authenticate
from gateway.ratelimit import per_caller
from settlement import exports, reconciliation
from settlement.reconciliation import MAX_BYTES


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _domain_error(exc: DomainError) -> JSONResponse:
    """A domain error as a typed JSON error: 404 not found, 409 a stored-report cap (waiting does
    not lift it, so not 429), 422 anything else."""
    if exc.code.endswith("NOT_FOUND"):
        status = 404
    elif exc.code == ErrorCode.LIMIT_EXCEEDED:
        status = 409
    else:
        status = 422
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message, **exc.details}}, status_code=status
    )


class _BadQuery(ValueError):
    pass


def _page_query(request: Request) -> tuple[list[str] | None, int | None, int | None]:
    """The `status`, `after` and `limit` query parameters (ranges are checked by the domain)."""
    q = request.query_params
    statuses = [x.strip() for x in q["status"].split(",") if x.strip()] if "status" in q else None
    numbers: list[int | None] = []
    for name in ("after", "limit"):
        raw = q.get(name)
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
            raise _BadQuery(f"{name} must be a whole number")
        numbers.append(None if raw is None else int(raw))
    return statuses, numbers[0], numbers[1]


def _line_json(x: reconciliation.ReconciliationLine) -> dict[str, Any]:
    return {
        "seq": x.seq,
        "status": x.status,
        "order_ref": x.order_ref,
        "kind": x.kind,
        "file_points": x.file_points,
        "ledger_points": x.ledger_points,
        "file_amount": str(x.file_amount.amount) if x.file_amount else None,
        "ledger_amount": str(x.ledger_amount.amount) if x.ledger_amount else None,
        "file_lines": x.file_lines,
    }


def _report_json(
    report: reconciliation.ReconciliationReport,
    lines: list[reconciliation.ReconciliationLine],
    next_after: int | None,
    statuses: list[str] | None,
    limit: int | None,
) -> dict[str, Any]:
    """A report's counts and one page of its lines, with the URL of the next page."""
    nxt = None
    if next_after is not None:
        query: dict[str, Any] = {"after": next_after, "limit": limit or reconciliation.PAGE_DEFAULT}
        if statuses:
            query["status"] = ",".join(statuses)
        nxt = f"/settlement/periods/{report.period_id}/reconciliations/{report.id}?" + urlencode(
            query
        )
    return {
        "id": str(report.id),
        "period_id": str(report.period_id),
        "partner_id": str(report.partner_id),
        "filename": report.filename,
        "file_sha256": report.file_sha256,
        "file_lines": report.file_lines,
        "created_at": report.created_at.isoformat(),
        "matched": report.matched,
        "mismatched": report.mismatched,
        "missing_in_ledger": report.missing_in_ledger,
        "missing_in_file": report.missing_in_file,
        "lines": [_line_json(x) for x in lines],
        "next_after": next_after,
        "next": nxt,
    }


async def _caller(request: Request) -> Principal | JSONResponse:
    try:
        principal = await authenticate(request)
    except AuthError as exc:
        return _error(401, exc.code, exc.message)
    if principal is None:
        return _error(401, "UNAUTHENTICATED", "send a Bearer access token")
    return principal


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
    if ids is None or not authz.may_see_settlement(caller, ids[1]):
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
            pdf = await exports.statement_pdf(
                conn,
                period_id=period_id,
                partner_id=partner_id,
                operator_name=request.app.state.settings.operator_name,
            )
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
    if not authz.is_operator(caller):
        return _error(403, "FORBIDDEN", "the liability report is the operator's")
    settings = request.app.state.settings
    async with request.app.state.engine.connect() as conn:
        body = await exports.liability_csv(
            conn, currency=settings.settlement_currency, point_value=settings.point_value
        )
    return Response(body, media_type="text/csv; charset=utf-8")


async def upload_reconciliation(request: Request) -> Response:
    """Match a partner's CSV record of a period and store the report; answers its counts and the
    first page of its lines (`status`, `limit` as for reading a report)."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    bad_ids = "period id (and, for the operator, partner_id) must be ids"
    try:
        period_id = uuid.UUID(request.path_params["period_id"])
    except ValueError:
        return _error(422, "VALIDATION", bad_ids)
    try:
        own = authz.settlement_partner(caller)
    except authz.Denied:
        return _error(403, "FORBIDDEN", "this needs the settlement:read scope")
    try:
        partner_id = own or uuid.UUID(request.query_params.get("partner_id", ""))
    except ValueError:
        return _error(422, "VALIDATION", bad_ids)
    try:
        statuses, _, limit = _page_query(request)
        reconciliation.page_args(statuses=statuses, after=None, limit=limit)
    except _BadQuery as exc:
        return _error(422, "VALIDATION", str(exc))
    except DomainError as exc:
        return _domain_error(exc)
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
                actor=caller.actor,
                filename=request.headers.get("x-filename"),
                max_per_period=request.app.state.settings.reconciliation_max_per_period,
            )
            lines, next_after = await reconciliation.lines_page(
                conn, reconciliation_id=report.id, statuses=statuses, limit=limit
            )
    except DomainError as exc:
        return _domain_error(exc)
    return JSONResponse(_report_json(report, lines, next_after, statuses, limit), status_code=201)


async def reconciliation_report(request: Request) -> Response:
    """One page of a stored reconciliation report (the operator's, or the partner's own)."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    try:
        viewer = authz.settlement_partner(caller)
    except authz.Denied:
        return _error(403, "FORBIDDEN", "this needs the settlement:read scope")
    try:
        period_id = uuid.UUID(request.path_params["period_id"])
        report_id = uuid.UUID(request.path_params["reconciliation_id"])
    except ValueError:
        return _error(404, "NOT_FOUND", "no such reconciliation report")
    try:
        statuses, after, limit = _page_query(request)
    except _BadQuery as exc:
        return _error(422, "VALIDATION", str(exc))
    try:
        async with request.app.state.engine.connect() as conn:
            report = await reconciliation.get_report(
                conn, reconciliation_id=report_id, partner_id=viewer, with_lines=False
            )
            if report.period_id != period_id:
                return _error(404, "NOT_FOUND", "no such reconciliation report")
            lines, next_after = await reconciliation.lines_page(
                conn, reconciliation_id=report_id, statuses=statuses, after=after, limit=limit
            )
    except DomainError as exc:
        return _domain_error(exc)
    return JSONResponse(_report_json(report, lines, next_after, statuses, limit))


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
        Route(
            "/settlement/periods/{period_id}/reconciliations/{reconciliation_id}",
            reconciliation_report,
            methods=["GET"],
        ),
    ]
