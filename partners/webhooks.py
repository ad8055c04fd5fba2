"""Partners' webhooks: endpoints, their delivery log, and the dispatcher's claim and record.

Events come from the transactional outbox (`ledger.outbox`), fanned out by a trigger into
`webhook_deliveries` (one per event and webhook). The dispatcher (`loyalty.webhooks`) claims
the due deliveries that head their member's queue (`FOR UPDATE SKIP LOCKED`: several workers
never take the same one, and a member's later event waits for its earlier one), delivers them
and records each outcome in the same transaction: a worker that dies mid-delivery leaves them
pending, to be delivered again with the same event id (at least once).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import NotFoundError, ValidationError
from core.ids import uuid7
from ledger.outbox import EVENT_TYPES

MAX_WEBHOOKS_PER_PARTNER = 10
MAX_URL_LENGTH = 2000


class WebhookNotFound(NotFoundError):
    """No such webhook (or delivery) of this partner."""


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: uuid.UUID
    partner_id: uuid.UUID
    url: str
    events: list[str]
    created_at: datetime
    secret: str | None = None  # only in the creation's result


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery the dispatcher holds: what to send, where, signed with what."""

    id: uuid.UUID
    url: str
    secret: str
    event_id: uuid.UUID
    event_type: str
    event_data: dict[str, Any]
    event_created_at: datetime
    attempts: int
    created_at: datetime


# -- the URL policy (no SSRF into the operator's network) ---------------------------------------


def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Addresses a webhook may not reach: private, loopback, link-local (cloud metadata),
    multicast, reserved, unspecified; IPv4-mapped IPv6 judged as its IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses `host` resolves to (a literal address is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


Resolver = Callable[[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delivery goes: `url` with its host replaced by an address that was checked
    (`connect_url`), and the original host for the `Host` header and TLS (SNI and the
    certificate's name). Connecting to the checked address, not resolving the name again,
    closes the DNS-rebinding window between the check and the connection."""

    url: str
    connect_url: str
    host_header: str
    tls_name: str | None  # the name TLS verifies (https only)


def check_url(url: str, *, allow_insecure: bool, resolver: Resolver | None = None) -> str:
    """`url` if a webhook may use it: https to a host whose every address is public, or (with
    WEBHOOK_ALLOW_INSECURE=1) http or https to a loopback address; ValidationError otherwise.
    Blocking (DNS): call it in a worker thread."""
    return check_target(url, allow_insecure=allow_insecure, resolver=resolver).url


def check_target(url: str, *, allow_insecure: bool, resolver: Resolver | None = None) -> Target:
    """`check_url`'s policy, and the checked address to connect to (`Target`)."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        raise ValidationError(f"url must be 1..{MAX_URL_LENGTH} characters", field="url")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ValidationError("url must not contain spaces or control characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("url is not a valid URL", field="url") from None
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise ValidationError("url must be an https URL", field="url")
    if parts.username or parts.password:
        raise ValidationError("url must not carry credentials", field="url")
    addresses = (resolver or resolve)(host)
    if not addresses:
        raise ValidationError("url's host does not resolve", field="url")
    loopback = all(a.is_loopback for a in addresses)
    if not (allow_insecure and loopback):
        if parts.scheme != "https":
            raise ValidationError("url must be an https URL", field="url")
        if any(_refused_address(a) for a in addresses):
            raise ValidationError(
                "url must not point to a private, loopback or link-local address", field="url"
            )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if port is None else f"{literal}:{port}"
    return Target(
        url=url,
        connect_url=parts._replace(netloc=netloc).geturl(),
        host_header=parts.netloc,
        tls_name=host if parts.scheme == "https" else None,
    )


def check_events(events: Iterable[str]) -> list[str]:
    """The event types, each known, without repeats (at least one)."""
    chosen = list(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown or not chosen:
        raise ValidationError(f"events must be some of {', '.join(EVENT_TYPES)}", field="events")
    return chosen


# -- endpoints ---------------------------------------------------------------------------------


async def create(
    conn: AsyncConnection, *, partner_id: uuid.UUID, url: str, events: list[str], actor: str
) -> WebhookRecord:
    """A new webhook of the partner (its URL already checked: `check_url`), with its secret."""
    count = await conn.execute(
        text("SELECT count(*) FROM webhooks WHERE partner_id = :p AND deleted_at IS NULL"),
        {"p": partner_id},
    )
    if int(count.scalar() or 0) >= MAX_WEBHOOKS_PER_PARTNER:
        raise ValidationError(
            f"a partner has at most {MAX_WEBHOOKS_PER_PARTNER} webhooks", field="url"
        )
    secret = "whsec_" + secrets.token_urlsafe(32)
    webhook_id = uuid7()
    created_at = (
        await conn.execute(
            text(
                "INSERT INTO webhooks (id, partner_id, url, secret, events, actor) "
                "VALUES (:id, :p, :url, :secret, :events, :actor) RETURNING created_at"
            ),
            {
                "id": webhook_id,
                "p": partner_id,
                "url": url,
                "secret": secret,
                "events": events,
                "actor": actor,
            },
        )
    ).scalar_one()
    return WebhookRecord(webhook_id, partner_id, url, events, created_at, secret)


async def list_for(conn: AsyncConnection, *, partner_id: uuid.UUID) -> list[WebhookRecord]:
    """The partner's live webhooks, oldest first (without their secrets)."""
    rows = await conn.execute(
        text(
            "SELECT id, partner_id, url, events, created_at FROM webhooks "
            "WHERE partner_id = :p AND deleted_at IS NULL ORDER BY created_at, id"
        ),
        {"p": partner_id},
    )
    return [WebhookRecord(*r) for r in rows]


async def delete(conn: AsyncConnection, *, partner_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Stop a webhook of the partner: no new deliveries; pending ones are dropped (failed)."""
    row = await conn.execute(
        text(
            "UPDATE webhooks SET deleted_at = now() "
            "WHERE id = :id AND partner_id = :p AND deleted_at IS NULL RETURNING id"
        ),
        {"id": webhook_id, "p": partner_id},
    )
    if row.one_or_none() is None:
        raise WebhookNotFound("no such webhook")
    await conn.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook deleted' "
            "WHERE webhook_id = :id AND status = 'pending'"
        ),
        {"id": webhook_id},
    )


_DELIVERY = (
    "SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, "
    "d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at, "
    "d.created_at FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
)


async def deliveries(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    limit: int,
    after: uuid.UUID | None = None,
) -> list[DeliveryRecord]:
    """A webhook's deliveries, newest first, those after the delivery `after` (keyset
    pagination on (created_at, id))."""
    sql = _DELIVERY + "WHERE d.webhook_id = :wh AND w.partner_id = :p "
    params: dict[str, Any] = {"wh": webhook_id, "p": partner_id, "n": limit}
    if after is not None:
        sql += (
            "AND (d.created_at, d.id) < (SELECT c.created_at, c.id FROM webhook_deliveries c "
            "WHERE c.id = :after AND c.webhook_id = :wh) "
        )
        params["after"] = after
    rows = await conn.execute(text(sql + "ORDER BY d.created_at DESC, d.id DESC LIMIT :n"), params)
    return [DeliveryRecord(*r) for r in rows]


async def redeliver(
    conn: AsyncConnection, *, partner_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryRecord:
    """A new delivery of the same event (same event id) to the same live webhook, due now."""
    row = (
        await conn.execute(
            text(
                """
                INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, event_data,
                                                event_created_at, seq, member_id)
                SELECT d.webhook_id, d.event_id, d.event_type, d.event_data,
                       d.event_created_at, d.seq, d.member_id
                FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                WHERE d.id = :id AND w.partner_id = :p AND w.deleted_at IS NULL
                RETURNING id
                """
            ),
            {"id": delivery_id, "p": partner_id},
        )
    ).one_or_none()
    if row is None:
        raise WebhookNotFound("no such delivery")
    found = await conn.execute(text(_DELIVERY + "WHERE d.id = :id"), {"id": row[0]})
    return DeliveryRecord(*found.one())


# -- the dispatcher's side ---------------------------------------------------------------------

# The due deliveries that head their (webhook, member) queue: no earlier pending delivery of the
# same member to the same webhook, whatever its due time (a member's events arrive in order).
# SKIP LOCKED: another worker's claims are passed over, and so (through NOT EXISTS, which sees
# them still pending) are the later events of their members.
_CLAIM = text(
    """
    SELECT d.id, w.url, w.secret, d.event_id, d.event_type, d.event_data, d.event_created_at,
           d.attempts, d.created_at
    FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= :now
      AND (d.member_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM webhook_deliveries e
            WHERE e.webhook_id = d.webhook_id AND e.member_id = d.member_id
              AND e.status = 'pending' AND e.seq < d.seq))
    ORDER BY d.next_attempt_at, d.seq
    LIMIT :n
    FOR UPDATE OF d SKIP LOCKED
    """
)


async def claim_due(conn: AsyncConnection, *, now: datetime, limit: int) -> list[Due]:
    """Lock up to `limit` due deliveries for this transaction (see `_CLAIM`)."""
    rows = await conn.execute(_CLAIM, {"now": now, "n": limit})
    return [Due(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went, and what follows: delivered, retried at `retry_at`, or failed."""

    delivery_id: uuid.UUID
    at: datetime
    status_code: int | None
    error: str | None
    delivered: bool
    retry_at: datetime | None  # None and not delivered: the retry window is over


async def record(conn: AsyncConnection, outcomes: list[Outcome]) -> None:
    """The attempts' outcomes, in one statement."""
    if not outcomes:
        return
    await conn.execute(
        text(
            """
            UPDATE webhook_deliveries d SET
                attempts = d.attempts + 1,
                last_attempt_at = o.at,
                last_status_code = o.code,
                last_error = o.error,
                status = CASE WHEN o.delivered THEN 'delivered'
                              WHEN o.retry_at IS NULL THEN 'failed' ELSE 'pending' END,
                delivered_at = CASE WHEN o.delivered THEN o.at END,
                next_attempt_at = COALESCE(o.retry_at, d.next_attempt_at)
            FROM unnest(CAST(:ids AS uuid[]), CAST(:ats AS timestamptz[]), CAST(:codes AS int[]),
                        CAST(:errors AS text[]), CAST(:delivered AS boolean[]),
                        CAST(:retry AS timestamptz[]))
                 AS o(id, at, code, error, delivered, retry_at)
            WHERE d.id = o.id
            """
        ),
        {
            "ids": [o.delivery_id for o in outcomes],
            "ats": [o.at for o in outcomes],
            "codes": [o.status_code for o in outcomes],
            "errors": [o.error for o in outcomes],
            "delivered": [o.delivered for o in outcomes],
            "retry": [o.retry_at for o in outcomes],
        },
    )


@dataclass(frozen=True)
class Backlog:
    """Webhook deliveries not delivered yet (pending: first try or a retry to come), and the
    age of the oldest of them: how far the dispatchers lag behind the ledger."""

    pending: int
    oldest_seconds: float


async def backlog(conn: AsyncConnection) -> Backlog:
    """The webhook backlog now. Reads the pending deliveries only (their partial index)."""
    row = (
        await conn.execute(
            text(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                "FROM webhook_deliveries WHERE status = 'pending'"
            )
        )
    ).one()
    return Backlog(int(row[0]), max(0.0, float(row[1])))
