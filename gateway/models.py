"""Tables of the gateway itself (the authorization server's are in `gateway.oauth.models`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Text
from sqlmodel import Field, SQLModel


class RateLimitWindow(SQLModel, table=True):
    """One rate-limit window of one caller, shared by every worker (UNLOGGED, migration 0022;
    written only by `gateway.ratelimit.SharedWindows`)."""

    __tablename__ = "rate_limit_windows"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key: str = Field(sa_column=Column(Text, primary_key=True))
    hits: int = Field(sa_column=Column(BigInteger, nullable=False))
    ends_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
