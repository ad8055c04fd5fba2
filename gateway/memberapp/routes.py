"""Routes of the member web app (`/app`).

The app is static: one HTML page (for `/app` and the OAuth redirect `/app/callback`) and ES
modules under `/app/assets/`, with a Content-Security-Policy that allows scripts, styles and
connections from this origin only. The one dynamic route draws the QR code of a redemption code
(`POST /app/qr`, member token): the code travels in the body, never in a URL that a proxy or
the access log would keep.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.oauth.auth import AuthError, authenticate
from gateway.ratelimit import GRAPHQL, caller_key, rate_limits

ASSETS = Path(__file__).parent.parent / "static" / "app"
MAX_QR_BODY = 1024
MAX_QR_TEXT = 64

# Scripts, styles, images and connections (fetch, the GraphQL websocket) from this origin only;
# images may also be the QR code's blob: URL. No inline script or style anywhere in the app.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    # /app/callback carries the authorization code in its query: never send it on.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@functools.cache
def _index() -> bytes:
    return (ASSETS / "index.html").read_bytes()


async def page(request: Request) -> Response:
    """The app's single page: every screen is drawn by app.js from the URL's fragment."""
    return Response(_index(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def qr_svg(text: str) -> bytes:
    """`text` as a QR code in SVG (error correction M, 4-module quiet zone)."""
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(
        out,
        kind="svg",
        scale=8,
        border=4,
        light="white",
        xmldecl=False,
        svgns=True,
        title="Payment code",
    )
    return out.getvalue()


async def qr(request: Request) -> Response:
    """`POST /app/qr` `{"text": "<code>"}` with a member token: the code's QR image (SVG)."""
    try:
        principal = await authenticate(request)
    except AuthError as exc:
        return _refuse(401, exc.code, exc.message)
    if principal is None or principal.member_id is None:
        return _refuse(401, "UNAUTHENTICATED", "a member token is required")
    limits = rate_limits(request)
    retry_after = await limits.hit(GRAPHQL, caller_key(principal, ""))
    if retry_after is not None:
        response = _refuse(429, "RATE_LIMITED", "too many requests: slow down")
        response.headers["Retry-After"] = str(retry_after)
        return response
    body = await request.body()
    if len(body) > MAX_QR_BODY:
        return _refuse(413, "PAYLOAD_TOO_LARGE", f"request body over {MAX_QR_BODY} bytes")
    try:
        text = json.loads(body).get("text")
    except (ValueError, AttributeError, RecursionError):
        text = None
    if not isinstance(text, str) or not 0 < len(text) <= MAX_QR_TEXT or not text.isprintable():
        return _refuse(400, "VALIDATION", f"text must be 1 to {MAX_QR_TEXT} printable characters")
    return Response(
        qr_svg(text),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def routes() -> list[BaseRoute]:
    """The member app's routes, for `create_app`."""
    return [
        Route("/app", page, methods=["GET"]),
        Route("/app/", page, methods=["GET"]),
        Route("/app/callback", page, methods=["GET"]),
        Route("/app/qr", qr, methods=["POST"]),
        Mount("/app/assets", StaticFiles(directory=ASSETS), name="app-assets"),
    ]
