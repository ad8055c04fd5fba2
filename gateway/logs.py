"""Log lines and the request id that ties them to a request.

Every HTTP request gets an id: the caller's `X-Request-ID` when it is sane (1 to 128 characters
of letters, digits and `._:-`, what proxies and tracing headers use), a fresh one otherwise, so
a header cannot forge log lines (a newline), bloat them (10 KB) or break them (a NUL). The id
is echoed in the response's `X-Request-ID`, put in GraphQL errors' `extensions.requestId`
(`gateway.graphql.view`) and in every log line written while the request runs (a context
variable, read by `RequestIdFilter`), uvicorn's access line included.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from contextvars import ContextVar
from typing import Any

from core.settings import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


# A new id: this process's random prefix and its count of requests, 32 hex digits in all;
# unique across processes and restarts without a system call per request (uuid4 costs one).
_PREFIX = secrets.token_hex(10)
_COUNT = itertools.count()


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when sane, else a new one (32 hex digits)."""
    for name, value in headers:
        if name == HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{_PREFIX}{next(_COUNT) & 0xFFFFFFFFFFFF:012x}"


def current_request_id() -> str | None:
    """The id of the request this code runs for; None outside of one (a background job)."""
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (None outside of a request) for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.__dict__.pop("color_message", None)  # uvicorn's copy with terminal colours
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s %(request_id)s"


def log_config(settings: Settings, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` (and uvicorn `log_config`) for LOG_FORMAT: every logger,
    uvicorn's too, writes to stderr through one handler that adds the request id; json: one
    object per line (python-json-logger), with `timestamp`, `level`, `logger`, `message`,
    `request_id` and, for an exception, `exc_info`."""
    formatter: dict[str, Any]
    if settings.log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,  # ISO 8601, UTC
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"main": formatter},
        "handlers": {
            "main": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["main"], "level": level},
        "loggers": {
            # uvicorn's loggers write through the root's handler, not their own.
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
