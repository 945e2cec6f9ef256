"""Naming and encoding of run artifacts."""

from __future__ import annotations

import io
import re
from typing import Any

from meguri.errors import TrackingError

_SEGMENT = re.compile(r"^[A-Za-z0-9_\-. ()+=,@]+$")


def safe_artifact_name(name: str) -> str:
    """Check a logical artifact name such as ``plots/roc.png``: relative, no ``..``, plain chars.

    Names are labels inside a run, never storage paths (the store derives those from the digest),
    but they are shown and exported, so they are kept to a safe form.
    """
    parts = name.replace("\\", "/").split("/")
    if (
        not name
        or len(name) > 500
        or name.startswith("/")
        or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts)
    ):
        raise TrackingError(
            f"Invalid artifact name {name!r}. Use a relative name of plain segments such as "
            "'plots/roc.png' (letters, digits, _ - . space; no '..', no leading '/')."
        )
    return "/".join(parts)


def figure_bytes(figure: Any) -> tuple[bytes, str, str]:
    """(content, media type, suffix) for a Plotly or Matplotlib figure."""
    if hasattr(figure, "to_plotly_json") and hasattr(figure, "to_json"):
        return figure.to_json().encode("utf-8"), "application/vnd.plotly.v1+json", ".plotly.json"
    if hasattr(figure, "savefig"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue(), "image/png", ".png"
    raise TrackingError(
        f"log_figure takes a Plotly or Matplotlib figure, not {type(figure).__name__}."
    )
