"""Short, sortable, human-readable IDs: ``run-01jdq3k8zr-7xk2``.

The middle part is the creation time in milliseconds, Crockford base32, fixed width, so IDs
sort by creation time; the tail is random so that two processes never collide.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new ID such as ``run-01jdq3k8zr-7xk2a`` for ``prefix="run"``."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}-{_b32(millis, 9)}-{_b32(secrets.randbits(25), 5)}"
