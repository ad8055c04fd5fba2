"""One ASGI middleware in front of every route: the request id (`gateway.logs`), and the
Prometheus series of HTTP requests by route and of GraphQL requests by operation
(`gateway.metrics`). One layer rather than two: it runs on every request, the earn's too."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.logs import HEADER, REQUEST_ID, request_id_of


@dataclass(slots=True)
class GraphQLCall:
    """What the GraphQL view learns of the request it runs (`note_operation`, `note_errors`),
    for the middleware to count once the answer is sent."""

    kind: str = "query"
    name: str | None = None
    errors: int = 0
    seen: bool = False


class ObserveMiddleware:
    """Sets the request id (header in, header out, log lines), times the request and counts it
    by route template (never the raw path) and, for /graphql, by operation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope["headers"])
        token = REQUEST_ID.set(rid)
        call = GraphQLCall()
        call_token = metrics.GRAPHQL_CALL.set(call)
        route = _route(scope)
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            metrics.observe_http(route, scope["method"], status, elapsed)
            if call.seen:
                metrics.observe_graphql(call, status, elapsed)
            metrics.GRAPHQL_CALL.reset(call_token)
            REQUEST_ID.reset(token)


def _route(scope: Scope) -> str:
    app = scope.get("app")
    for r in app.router.routes if app is not None else ():
        if r.matches(scope)[0] == Match.FULL:
            return str(getattr(r, "path", "unmatched"))
    return "unmatched"
