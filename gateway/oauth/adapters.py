"""Starlette requests and responses in the shapes authlib's framework-neutral server expects.

authlib never awaits: each request is read (body included) before authlib sees it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from starlette.datastructures import Headers, ImmutableMultiDict
from starlette.responses import Response


def transport_allowed(url: str, issuer: str) -> bool:
    """authlib refuses OAuth over plain HTTP (except loopback). A deployment that publishes an
    `http://` issuer has opted out of TLS (development, tests, a private demo network); one that
    publishes `https://` gets authlib's rule."""
    return is_secure_transport(url) or not issuer.startswith("https://")


def is_clean(value: str) -> bool:
    """False for text PostgreSQL cannot store or UTF-8 cannot encode (NUL, lone surrogates):
    such a client id or e-mail is refused before it reaches the database."""
    return "\x00" not in value and not any("\ud800" <= ch <= "\udfff" for ch in value)


def parse_basic(headers: Any) -> tuple[str, str] | None:
    """Client id and secret from `Authorization: Basic`, form-decoded (RFC 6749 §2.3.1)."""
    auth = headers.get("Authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in decoded:
        return None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


class StarlettePayload(OAuth2Payload):
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: dict[str, list[str]] = {}
        for key, value in items:
            self._data.setdefault(key, value)
            self._datalist.setdefault(key, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):
    """An OAuth2Request built from an already-read Starlette request (authlib never awaits).

    `payload_from` says where the OAuth parameters are: the query for the authorization
    endpoint, the form body for the token, introspection and revocation endpoints.
    """

    def __init__(
        self,
        *,
        method: str,
        url: str,
        headers: Headers,
        args: list[tuple[str, str]],
        form: list[tuple[str, str]],
        payload_from: str,
    ) -> None:
        # The transport was checked by the caller with `transport_allowed`; authlib's own check
        # (TLS or loopback only) would refuse an explicitly plain-HTTP deployment.
        parts = urlsplit(url)
        super().__init__(method, urlunsplit(("https", *parts[1:])), headers=headers)
        self.uri = url
        self._args = ImmutableMultiDict(args)
        self._form = ImmutableMultiDict(form)
        self.payload = StarlettePayload(args if payload_from == "args" else form)

    @property
    def args(self) -> ImmutableMultiDict:
        return self._args

    @property
    def form(self) -> ImmutableMultiDict:
        return self._form


class StarletteJsonPayload(JsonPayload):
    def __init__(self, data: Any) -> None:
        self._data = data

    @property
    def data(self) -> Any:
        return self._data


class StarletteJsonRequest(JsonRequest):
    """A JsonRequest from an already-read body (for JSON endpoints such as client registration)."""

    def __init__(self, *, method: str, url: str, headers: Headers, body: bytes) -> None:
        super().__init__(method, url, headers)
        self.payload = StarletteJsonPayload(json.loads(body) if body else {})


def response_from(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    """A Starlette response for authlib's (status, body, headers) triple."""
    if isinstance(body, dict):
        body = json.dumps(body)
    return Response(content=body or b"", status_code=status, headers=dict(headers))
