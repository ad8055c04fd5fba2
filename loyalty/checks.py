"""Checks of the text a caller sends, shared by the use cases."""

from __future__ import annotations

from core.errors import ValidationError


def text(value: str, what: str, max_len: int = 200) -> str:
    """`value` stripped; refused unless 1..`max_len` characters (`what` names the field)."""
    value = value.strip()
    if not value or len(value) > max_len:
        raise ValidationError(f"{what} must be 1..{max_len} characters", field=what)
    return value
