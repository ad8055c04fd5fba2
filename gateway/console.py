"""The operator console at `/console`: static HTML and ES modules, no build step.

The page is the public OAuth client `coalition-console` (PKCE): it sends an operator user to
the sign-in page, exchanges the code it gets back at `/console/callback`, and talks to
`/graphql` and the settlement file routes with the operator token. Everything the console shows
comes from those APIs; this module only serves the files, with headers that allow no inline
script, no framing and no third-party origin.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

ROOT = Path(__file__).parent / "static" / "console"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def page(request: Request) -> Response:
    """The console's one page (the callback too: the script finishes the sign-in there)."""
    return FileResponse(ROOT / "index.html", headers={**HEADERS, "Cache-Control": "no-store"})


class _Assets(StaticFiles):
    """The scripts and styles, with the console's headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in HEADERS.items()),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def routes() -> list[BaseRoute]:
    """`/console`, `/console/callback` and `/console/assets/*`, for `create_app`."""
    return [
        Route("/console", page, methods=["GET"]),
        Route("/console/", page, methods=["GET"]),
        Route("/console/callback", page, methods=["GET"]),
        Mount("/console/assets", _Assets(directory=ROOT), name="console-assets"),
    ]
