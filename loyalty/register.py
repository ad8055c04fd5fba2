"""Register: a person joins the coalition and gets a card number (and, under the operator's
rules, a sign-up bonus; with a member's referral code, the promise of a referral bonus)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core.clock import utcnow
from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from loyalty import bonuses
from loyalty.checks import text
from loyalty.runtime import Runtime
from members import bonus_rules, passwords, referrals
from members import service as members
from members.service import MemberRecord

# What `register` may raise (gateway.graphql checks the mutation's result union against it).
ERRORS = frozenset({ErrorCode.VALIDATION})

Hasher = Callable[[Callable[[str], str], str], Awaitable[str]]

UNKNOWN_REFERRAL_CODE = "referralCode is not a member's referral code"


async def register(
    rt: Runtime,
    *,
    email: str,
    password: str,
    name: str,
    hashing: Hasher,
    referral_code: str | None = None,
) -> MemberRecord:
    """A new member with this login; `hashing(fn, password)` runs the (slow) password hash
    where the caller allows it (the gateway: off the event loop, within its thread budget).

    One unit of work: the member, the sign-up bonus of the rules in force (if any) and the
    referral (if a code was given) are recorded together or not at all. An unknown referral
    code is refused (VALIDATION on `referralCode`) and nothing is created."""
    email = text(email, "email", 254).lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        raise DomainValidation("email is not an e-mail address", field="email")
    if not 8 <= len(password) <= 256:
        raise DomainValidation("password must be 8..256 characters", field="password")
    name = text(name, "name")
    code = None
    if referral_code is not None and referral_code.strip():
        code = referrals.normalise(referral_code)
        if code is None:
            raise DomainValidation(UNKNOWN_REFERRAL_CODE, field="referralCode")
    password_hash = await hashing(passwords.hash_password, password)
    async with rt.engine.begin() as conn:
        referrer = None
        if code is not None:
            referrer = await referrals.referrer_by_code(conn, code=code)
            if referrer is None:
                raise DomainValidation(UNKNOWN_REFERRAL_CODE, field="referralCode")
        member = await members.create(conn, email=email, name=name, password_hash=password_hash)
        rules = await bonus_rules.current(conn)
        if rules.signup_points > 0:
            await bonuses.pay_signup_bonus(
                conn,
                member_id=member.id,
                points=rules.signup_points,
                validity_months=rt.settings.points_validity_months,
            )
        if referrer is not None:
            # The points promised now are paid after the friend's first earn, whatever the
            # rules are by then (0: nothing is due, the referral is still recorded).
            await referrals.record(
                conn,
                friend_id=member.id,
                referrer_id=referrer,
                points=rules.referral_points,
                at=utcnow(),
            )
        return member
