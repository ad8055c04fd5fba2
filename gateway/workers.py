"""Which worker process answered: the `X-Coalition-Worker` header (its pid) on every response.

`coalition serve --workers N` runs N processes behind one socket; the kernel hands each new
connection to one of them. The header lets an operator (and the multi-worker test) see which
process served a request, so that a limit shown to hold "across workers" was really met by
both. The pid is no secret worth hiding from a client that can already reach the service.
"""

from __future__ import annotations

import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-coalition-worker"


class WorkerHeader:
    """Pure ASGI middleware (no per-request objects beyond the header): adds this process's
    pid to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.value = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, self.value)]
            await send(message)

        await self.app(scope, receive, send_with_pid)
