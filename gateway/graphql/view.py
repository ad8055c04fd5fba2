"""The /graphql endpoint: authentication, body cap and per-caller rate limit in front of
Strawberry's ASGI view."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections import Counter
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
)
from strawberry.types.unset import UNSET

from core import clock
from gateway import metrics
from gateway.graphql.context import Context
from gateway.graphql.errors import UNAVAILABLE
from gateway.logs import current_request_id
from gateway.oauth import revocation
from gateway.oauth.auth import AuthError, Principal, authenticate, authenticate_token
from gateway.oauth.state import oauth_state
from gateway.ratelimit import GRAPHQL, caller_key, rate_limits

MAX_BODY_BYTES = 64 * 1024
# graphql-transport-ws close codes: the token ended (expired or revoked) while the socket was
# open; the principal already has WS_MAX_PER_PRINCIPAL sockets open in this process.
CLOSE_TOKEN_ENDED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429

log = logging.getLogger(__name__)


class _SocketRefused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _principal_key(p: Principal) -> str:
    """Whose sockets count together: a member's, a partner's (all its clients), a client's."""
    if p.member_id is not None:
        return f"member:{p.member_id}"
    if p.partner_id is not None:
        return f"partner:{p.partner_id}"
    if p.operator_user_id is not None:
        return f"operator_user:{p.operator_user_id}"
    return f"client:{p.client_id}"


class _TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with the token's lifetime enforced: once acknowledged, a watcher
    closes the socket (4401) when the token expires or is revoked, and the socket holds one of
    its principal's slots (see `_GraphQL.on_ws_connect`) until it ends."""

    watcher: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except _SocketRefused as exc:
            await self.websocket.close(code=exc.code, reason=exc.reason)
            return
        principal = self.context.principal
        if self.connection_acknowledged and principal is not None and self.watcher is None:
            self.watcher = asyncio.create_task(self._watch(principal))

    async def run_operation(self, operation: Any) -> None:
        try:
            await super().run_operation(operation)
        finally:
            await self.context.release()  # the operation's reads (`Context.read`)

    async def _watch(self, principal: Principal) -> None:
        """Sleep until the token's deadline or a change of the revocation list, then check."""
        app = self.context.request.app
        revoked = oauth_state(app).revoked
        while True:
            now = clock.utcnow()
            if principal.expires_at is not None and now >= principal.expires_at:
                return await self._end("token expired")
            try:
                if await revoked.is_revoked(app.state.engine, principal.token_id):
                    return await self._end("token revoked")
            except Exception:  # the database is away: keep the deadline, look again later
                log.exception("websocket token check failed")
            # Revocations by other processes are seen when the list reloads: look that often.
            wait = revocation.REFRESH_SECONDS
            if principal.expires_at is not None:
                wait = min(wait, (principal.expires_at - now).total_seconds())
            await revoked.wait_for_change(wait)

    async def _end(self, reason: str) -> None:
        principal = self.context.principal
        log.info("websocket of %s closed: %s", principal and _principal_key(principal), reason)
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.websocket.close(code=CLOSE_TOKEN_ENDED, reason=reason)

    async def shutdown(self) -> None:
        if self.context.socket_slot is not None:
            assert isinstance(self.view, _GraphQL)
            self.view.release_slot(self.context.socket_slot)
            self.context.socket_slot = None
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        await super().shutdown()


GRAPHIQL_PAGE = Path(__file__).with_name("graphiql.html")
STATIC_GRAPHIQL = "/static/graphiql"  # where gateway.app mounts gateway/static/graphiql
NO_IDE = (
    'POST GraphQL queries here (JSON body {"query": ...}, Authorization: Bearer <token>); '
    "GraphiQL, in a browser at this URL, is on when GRAPHQL_INTROSPECTION=1"
)


@functools.cache
def _graphiql_html() -> str:
    return GRAPHIQL_PAGE.read_text(encoding="utf-8")


class _GraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = _TransportWSHandler

    def __init__(self, schema: Any, *, graphiql: bool) -> None:
        # With its IDE off Strawberry answers a browser's GET with a bare 404: keep it on and
        # let render_graphql_ide decide (GraphiQL, or what to do instead).
        super().__init__(schema, graphql_ide="graphiql")
        self.graphiql = graphiql
        self.open_sockets: Counter[str] = Counter()  # per principal, in this process

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL with its assets from this app (no CDN); when off, where queries go."""
        if not self.graphiql:
            return _error(404, "NOT_FOUND", NO_IDE)
        static = request.scope.get("root_path", "") + STATIC_GRAPHIQL
        return HTMLResponse(_graphiql_html().replace("{{ static }}", static))

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Strawberry's refusals of a request (malformed body, wrong method or content type)
        as JSON errors with their 4xx status, like every other error of this endpoint."""
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if isinstance(request, WebSocket):
                raise
            return _refusal(exc.status_code, exc.reason)

    def decode_json(self, data: str | bytes) -> object:
        """The body (and GET's `variables`, `extensions`) must be a JSON object: anything else,
        or bytes that are not JSON at all, is a 400, never an error further on."""
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if not isinstance(value, dict):
            raise HTTPException(400, "Expected a JSON object")
        return value

    async def parse_http_body(self, request: Any) -> Any:
        """Strawberry's parse, with the operation's type and name noted for the metrics."""
        data = await super().parse_http_body(request)
        if not isinstance(data, list):
            metrics.note_operation(data.query, data.operation_name)
        return data

    async def process_result(self, request: Any, result: Any) -> Any:
        """Every error carries a stable `extensions.code`, those GraphQL itself raises too, and
        the request's id (`extensions.requestId`, as in the logs and X-Request-ID)."""
        response: dict[str, Any] = dict(await super().process_result(request, result))
        errors: list[dict[str, Any]] = response.get("errors") or []
        if errors:
            metrics.note_errors(len(errors))
            request_id = current_request_id()
            for error, formatted in zip(result.errors or (), errors, strict=False):
                extensions = formatted.setdefault("extensions", {})
                extensions.setdefault("code", graphql_error_code(error))
                if request_id is not None:
                    extensions.setdefault("requestId", request_id)
        return response

    async def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        """Run the request's operation, then close its read connection (`Context.read`)."""
        try:
            result = await super().execute_operation(*args, **kwargs)
            context = kwargs.get("context")
            if isinstance(context, Context) and _unavailable(result):
                # Retriable: the database was out of reach (gateway.graphql.schema).
                context.response.status_code = 503
                context.response.headers["Retry-After"] = "1"
            return result
        finally:
            context = kwargs.get("context")
            if isinstance(context, Context):
                await context.release()

    @property
    def websocket_subprotocols(self) -> list[str]:
        """graphql-transport-ws only: its handler enforces the token's lifetime."""
        return [GRAPHQL_TRANSPORT_WS_PROTOCOL]

    async def on_ws_connect(self, context: Context) -> Any:
        """Browsers cannot set headers on a websocket: the token may come in the
        `connection_init` payload instead ({"Authorization": "Bearer ..."}). An authenticated
        socket takes one of its principal's WS_MAX_PER_PRINCIPAL slots."""
        params = context.connection_params or {}
        raw = params.get("Authorization") or params.get("authorization") or params.get("token")
        if isinstance(raw, str) and raw.strip():
            scheme, _, rest = raw.strip().partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else raw.strip()
            try:
                context.principal = await authenticate_token(context.request.app, token)
            except AuthError:
                raise ConnectionRejectionError() from None
        if context.principal is not None:
            key, limit = _principal_key(context.principal), context.settings.ws_max_per_principal
            if self.open_sockets[key] >= limit:
                log.warning("websocket refused: %s already has %d open", key, limit)
                raise _SocketRefused(
                    CLOSE_TOO_MANY_SOCKETS,
                    f"too many open websockets for this principal (at most {limit})",
                )
            self.open_sockets[key] += 1
            context.socket_slot = key
        return UNSET

    def release_slot(self, key: str) -> None:
        """A socket that held one of its principal's slots ended."""
        self.open_sockets[key] -= 1
        if self.open_sockets[key] <= 0:
            del self.open_sockets[key]

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        state = request.app.state
        return Context(
            request=request,
            response=response,
            engine=state.engine,
            pool=state.pool,
            earns=state.earns,
            settings=state.settings,
            caches=state.caches,
            principal=request.scope.get("principal"),
        )


# Before execution, a variable value or literal GraphQL could not coerce (an Int above 2^31, a
# string for an Int, a required value missing) is the caller's input: VALIDATION, as for any
# other bad value; any other error then is the document's.
_BAD_VALUE = re.compile(r"^Variable '\$[^']*' |cannot represent")


def graphql_error_code(error: GraphQLError) -> str:
    """The code of an error raised by GraphQL itself rather than by a resolver: a document
    that does not parse, one the schema refuses, a value that does not fit its type."""
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.path is None:
        return "VALIDATION" if _BAD_VALUE.search(error.message) else "GRAPHQL_VALIDATION_FAILED"
    return "INTERNAL_SERVER_ERROR"


def _unavailable(result: Any) -> bool:
    errors = getattr(result, "errors", None) or ()
    return any((e.extensions or {}).get("code") == UNAVAILABLE for e in errors)


def _extensions(code: str) -> dict[str, str]:
    request_id = current_request_id()
    return {"code": code} if request_id is None else {"code": code, "requestId": request_id}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": _extensions(code)}]},
        status_code=status,
        headers=headers,
    )


def _refusal(status: int, message: str) -> Response:
    # ensure_ascii: the message may quote the request (an operation name), lone surrogates too.
    body = {
        "data": None,
        "errors": [{"message": message, "extensions": _extensions(_code(status))}],
    }
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "BAD_REQUEST"


class GraphQLEndpoint:
    """ASGI app for /graphql (HTTP and websocket)."""

    def __init__(self, schema: Any, *, graphql_ide: bool) -> None:
        self.view: ASGIApp = _GraphQL(schema, graphiql=graphql_ide)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.view(scope, receive, send)
            return
        request = Request(scope) if scope["type"] == "http" else WebSocket(scope, receive, send)
        try:
            principal: Principal | None = await authenticate(request)
        except AuthError as exc:
            if scope["type"] == "websocket":
                await WebSocket(scope, receive, send).close(code=4401)
                return
            response = _error(
                401,
                exc.code,
                exc.message,
                {
                    "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.message}"'
                },
            )
            await response(scope, receive, send)
            return
        scope["principal"] = principal
        if scope["type"] == "http":
            # Each member, partner client and anonymous IP has its own bucket.
            limits = rate_limits(request)
            key = caller_key(principal, limits.client_ip(request) if principal is None else "")
            retry_after = await limits.hit(GRAPHQL, key)
            if retry_after is not None:
                await _error(
                    429,
                    "RATE_LIMITED",
                    "too many requests: slow down",
                    {"Retry-After": str(retry_after)},
                )(scope, receive, send)
                return
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                await _error(413, "PAYLOAD_TOO_LARGE", f"request body over {MAX_BODY_BYTES} bytes")(
                    scope, receive, send
                )
                return
            try:
                await self.view(scope, _capped(receive), send)
            except _BodyTooLarge:  # raised while the body is read: nothing was sent yet
                await _error(413, "PAYLOAD_TOO_LARGE", f"request body over {MAX_BODY_BYTES} bytes")(
                    scope, receive, send
                )
            except ClientDisconnect:  # gone before its body arrived: no one to answer, no error
                pass
            return
        await self.view(scope, receive, send)


def _capped(receive: Receive) -> Receive:
    """Refuse chunked bodies that grow past the cap (no content-length to check up front)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise _BodyTooLarge
        return message

    return wrapped


class _BodyTooLarge(Exception):
    pass
