"""Register: a person joins the coalition and gets a card number."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from loyalty.checks import text
from loyalty.runtime import Runtime
from members import passwords
from members import service as members
from members.service import MemberRecord

# What `register` may raise (gateway.graphql checks the mutation's result union against it).
ERRORS = frozenset({ErrorCode.VALIDATION})

Hasher = Callable[[Callable[[str], str], str], Awaitable[str]]


async def register(
    rt: Runtime, *, email: str, password: str, name: str, hashing: Hasher
) -> MemberRecord:
    """A new member with this login; `hashing(fn, password)` runs the (slow) password hash
    where the caller allows it (the gateway: off the event loop, within its thread budget)."""
    email = text(email, "email", 254).lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        raise DomainValidation("email is not an e-mail address", field="email")
    if not 8 <= len(password) <= 256:
        raise DomainValidation("password must be 8..256 characters", field="password")
    name = text(name, "name")
    password_hash = await hashing(passwords.hash_password, password)
    async with rt.engine.begin() as conn:
        return await members.create(conn, email=email, name=name, password_hash=password_hash)
