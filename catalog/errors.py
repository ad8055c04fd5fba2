"""Catalog error codes."""

from core.errors import DomainError, ErrorCode


class RewardNotFound(DomainError):
    """No such reward, or not one the caller may see or change (its existence is not told)."""

    code = ErrorCode.NOT_FOUND


class OutOfStock(DomainError):
    """The reward's stock (or its voucher's pool of codes) is used up."""

    code = ErrorCode.OUT_OF_STOCK


class RewardChanged(DomainError):
    """The reward changed (price, retirement) while it was being redeemed: nothing was taken."""

    code = ErrorCode.VALIDATION


class OfferNotFound(DomainError):
    """No such offer, or not one the caller may see or change (its existence is not told)."""

    code = ErrorCode.NOT_FOUND


class InvalidPromoCode(DomainError):
    """The promo code is unknown, expired, used up, or already applied by this member (which
    of these is not told)."""

    code = ErrorCode.INVALID_PROMO_CODE
