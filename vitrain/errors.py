"""The one exception type for user mistakes (bad config, bad paths, bad files), and the checks of
single config values that raise it, so that every layer words the same mistake the same way."""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """A mistake the user can fix: the message names the offending value and the fix.

    The entry point prints the message alone (no traceback) and exits non-zero.
    """


class Range(typing.NamedTuple):
    """An interval of valid values: ``[low, high)`` and its variants."""

    low: float
    high: float
    low_closed: bool = True
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        return (
            f"{'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"
        )


FRACTION = Range(0, 1, low_closed=False)  # a share of something that leaves some of it: (0, 1)


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_int(key: str, value: Any, minimum: int = 1, hint: str = "") -> None:
    """``key=value`` is an integer of at least ``minimum`` (1: a positive integer); ``hint``
    (e.g. ``"1: off; DeiT: 3"``) is added to the message."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise UserError(f"{key}={value}: must be {what}{_hint(hint)}.")


def require_positive(prefix: str, **values: Any) -> None:
    """Raise a :class:`UserError` naming ``<prefix>.<key>=<value>`` for the first value that is
    not a positive integer (config keys that count something: images, epochs, tokens, sizes)."""
    for key, value in values.items():
        require_int(f"{prefix}.{key}", value)


def require_choice(key: str, value: Any, choices: Iterable[Any], hint: str = "") -> None:
    """``key=value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise UserError(f"{key}={value!r}: choose one of {', '.join(map(str, choices))}{_hint(hint)}.")


def require_in(key: str, value: Any, valid: Range, what: str = "", fix: str = "") -> None:
    """``key=value`` is a number in ``valid``; ``what`` names the value in the message, ``fix``
    ends it."""
    if is_number(value) and value in valid:
        return
    name = f"{what} " if what else ""
    raise UserError(f"{key}={value}: {name}must be in {valid}" + (f"; {fix}." if fix else "."))


def user_message(exc: UserError) -> str:
    """The user-facing text of ``exc``, without a DataLoader worker's traceback.

    Errors raised in DataLoader worker processes are re-raised in the main process with the
    worker's traceback prepended to the message; only the original message is wanted.
    """
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if "Original Traceback" in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()
