"""One settings object, read from the environment (and `.env`), validated at start."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ValidationError
from core.money import DEFAULT_POINT_VALUE, currency_code


class Settings(BaseSettings):
    """Everything configurable about a Coalition deployment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="Any libpq URI (unix sockets via ?host=/dir). Unset: embedded PostgreSQL.",
    )
    data_dir: Path = Field(
        default=Path(".data"), description="Where the embedded PostgreSQL lives."
    )
    database_name: str = Field(default="coalition", description="Database used in embedded mode.")
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=20, ge=0, le=500)
    db_pool_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How long a request waits for a pooled database connection (the database "
        "down or every connection busy) before it fails with UNAVAILABLE (503, retry).",
    )
    earn_batch_max: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Group commit: at most this many concurrent earns share one transaction.",
    )
    earn_batch_in_flight: int = Field(
        default=2, ge=1, le=64, description="Group commit: earn transactions running at once."
    )
    earn_batch_split_at: int = Field(
        default=32,
        ge=2,
        le=1000,
        description="Group commit: from this many waiting earns, starting batches share them.",
    )

    public_url: str | None = Field(default=None, description="OAuth issuer and base of links.")
    host: str = "127.0.0.1"
    port: int = 8000
    graphql_introspection: bool = False
    rate_limit_per_second: float = Field(
        default=200.0,
        gt=0,
        description="/graphql requests per caller (member, OAuth client, or IP when anonymous), "
        "per process.",
    )
    rate_limit_burst: float = Field(default=400.0, ge=1)
    rate_limit_oauth_client: str = Field(
        default="60/minute",
        description="/oauth/* requests per client id named in Basic credentials, per process.",
    )
    rate_limit_oauth_ip: str = Field(
        default="300/minute", description="/oauth/* requests per client IP, per process."
    )
    rate_limit_settlement: str = Field(
        default="60/minute", description="/settlement/* requests per caller, per process."
    )
    rate_limit_register: str = Field(
        default="20/hour", description="registerMember calls per client IP, per process."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For is "
        "believed; empty: none (the peer address is the client).",
    )
    password_hash_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="argon2 hashes/verifications running at once (each takes a core for tens "
        "of ms): keeps a flood of logins or token requests from starving the event loop.",
    )
    graphql_max_cost: int = Field(
        default=50_000,
        ge=100,
        description="Most a GraphQL operation may cost (fields x requested list sizes); "
        "a costlier one is refused with QUERY_TOO_COMPLEX before it runs.",
    )
    admission_max_in_flight: int = Field(
        default=128,
        ge=1,
        le=100_000,
        description="HTTP requests one process runs at once; as many more may wait for a slot "
        "(gateway.admission), the rest are refused with 503 OVERLOADED and Retry-After.",
    )
    admission_queue_timeout_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="How long a request waits for a slot before it is refused (0: refused at "
        "once when every slot is taken).",
    )
    ws_max_per_principal: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Open GraphQL websockets per principal (member, partner or operator client), "
        "per process; one more is closed with code 4429.",
    )

    settlement_currency: str = Field(default="RUB", min_length=3, max_length=3)
    point_value: Decimal = Field(default=DEFAULT_POINT_VALUE, gt=0)
    settlement_period: Literal["daily", "weekly", "monthly"] = Field(
        default="monthly", description="Length of the periods `coalition settle` creates."
    )
    settlement_timezone: str = Field(
        default="UTC", description="IANA zone in which settlement days, weeks and months start."
    )
    settlement_close_delay_minutes: int = Field(
        default=0,
        ge=0,
        le=7 * 24 * 60,
        description="`coalition settle` closes a period this long after its end (late events "
        "after the close become adjustments of the next period either way).",
    )
    settle_every_minutes: int = Field(
        default=0,
        ge=0,
        le=24 * 60,
        description="`serve` runs `settle` (due periods, expiry, closing) every N minutes; 0: off "
        "(run `coalition settle` from cron instead).",
    )
    referral_sweep_minutes: int = Field(
        default=10,
        ge=0,
        le=24 * 60,
        description="`serve` pays the referral bonuses still due after a friend's first earn "
        "(the earn pays them itself; this is the safety net) every N minutes; 0: off (run "
        "`coalition pay-referrals` from cron instead).",
    )
    tier_review_day: str = Field(
        default="",
        description="`serve` runs the yearly tier review on this month-day (MM-DD, UTC; e.g. "
        "01-01), as of 00:00 UTC that day; empty: off (run `coalition review-tiers` instead).",
    )
    scheduler: bool = Field(
        default=True,
        description="0: `serve` runs none of the periodic jobs (settlement, referral sweep, tier "
        "review), `coalition scheduler` runs them in a process of its own.",
    )
    operator_name: str = Field(default="Coalition operator", description="Shown on statements.")
    reconciliation_max_per_period: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Most reconciliation reports a partner may store for one period; uploads "
        "beyond are refused (LIMIT_EXCEEDED), so repeated uploads cannot grow the database "
        "without bound.",
    )

    points_validity_months: int = Field(default=36, ge=1, le=1200)
    webhook_allow_insecure: bool = Field(
        default=False,
        description="1: webhooks may also use http to a loopback address (development, tests).",
    )
    webhook_workers: int = Field(
        default=1, ge=0, le=32, description="Webhook dispatchers `serve` runs (0: none)."
    )
    import_workers: int = Field(
        default=1, ge=0, le=8, description="Batch-file importers `serve` runs (0: none)."
    )
    import_lanes: int = Field(
        default=3,
        ge=1,
        le=8,
        description="Connections one large import writes on side by side, its lines split by "
        "member (1: one after another).",
    )
    transfer_daily_limit: int = Field(
        default=10_000,
        ge=0,
        le=1_000_000_000,
        description="Most points a member may transfer to other members per day; 0: transfers "
        "are off.",
    )
    hold_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`serve`'s log lines: text, or json (one JSON object per line, with the "
        "request id of the request that logged it).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics answers only `Authorization: Bearer <token>`; unset: "
        "anyone who reaches the port reads it (request counts and latencies per route and "
        "GraphQL operation, points issued and redeemed, the outstanding points and their value, "
        "the webhook backlog; no member, partner or secret).",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OpenTelemetry: when set (e.g. http://collector:4318), `serve` sends traces "
        "(HTTP requests, GraphQL, SQL) over OTLP/HTTP to it; unset: no tracing at all.",
    )
    otel_service_name: str = Field(
        default="coalition", description="OpenTelemetry: the traces' service.name."
    )

    @field_validator("tier_review_day")
    @classmethod
    def _review_day(cls, v: str) -> str:
        v = v.strip()
        if v == "":
            return v
        try:
            if len(v) != 5 or v[2] != "-":
                raise ValueError(v)
            datetime.strptime(f"2001-{v}", "%Y-%m-%d")  # a non-leap year: no 02-29
        except ValueError:
            raise ValueError("TIER_REVIEW_DAY must be MM-DD (not 02-29), or empty") from None
        return v

    @field_validator("settlement_currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        try:
            return currency_code(v)
        except ValidationError as exc:
            raise ValueError(exc.message) from None

    @field_validator(
        "rate_limit_oauth_client",
        "rate_limit_oauth_ip",
        "rate_limit_settlement",
        "rate_limit_register",
    )
    @classmethod
    def _rate(cls, v: str) -> str:
        from limits import parse_many

        try:
            parse_many(v)
        except ValueError:
            raise ValueError(f"not a rate limit such as '60/minute': {v!r}") from None
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: str) -> str:
        for part in filter(None, (p.strip() for p in v.split(","))):
            try:
                ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR: {part!r}") from None
        return v

    @field_validator("settlement_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @property
    def issuer(self) -> str:
        return (self.public_url or f"http://127.0.0.1:{self.port}").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
