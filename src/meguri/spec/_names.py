"""Names and durations as every spec section writes them: one rule for each.

A name (project, environment, alert, notifier) is letters, digits, ``.``, ``_`` and ``-``,
starting with a letter or digit, at most 100 characters; a duration is a positive number and
a unit ``s``, ``m``, ``h``, ``d`` or ``w``.
"""

from __future__ import annotations

import re

__all__ = ["check_duration", "check_name", "duration_seconds"]

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def check_name(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name; use letters, digits, '.', '_' and '-', starting "
            "with a letter or digit, at most 100 characters (e.g. breast-cancer)"
        )
    return value


def duration_seconds(value: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``1h``, ``1d`` or ``2w``."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or float(match[1]) <= 0:
        raise ValueError(
            f"{value!r} is not a duration; write a positive number and a unit s, m, h, d or w "
            "(e.g. 15m, 1h, 1d)"
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def check_duration(value: str) -> str:
    duration_seconds(value)
    return value
