"""Validation shared by the config dataclasses: one message format for out-of-range fields."""

from typing import Any


def require_min(
    obj: Any, names: tuple[str, ...], minimum: int | float, *, strict: bool = False
) -> None:
    """Raise ``ValueError`` naming the first field of ``names`` below ``minimum`` (or not above
    it, with ``strict``), e.g. ``steps must be >= 1, got 0``.

    Raises:
        ValueError: a field is below ``minimum`` (or not above it, with ``strict``); names it.
    """
    for name in names:
        value = getattr(obj, name)
        if value < minimum or (strict and value == minimum):
            op = ">" if strict else ">="
            raise ValueError(f"{name} must be {op} {minimum:g}, got {value!r}")
