"""Running the ``meguri`` command as a user would: a child process, in a folder, with none of
the caller's ``MEGURI_*`` settings (so the folder's own ``.meguri/`` is used)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MEGURI = [sys.executable, "-c", "from meguri.cli import main; main()"]


def clean_env() -> dict[str, str]:
    """This process's environment less every ``MEGURI_*`` variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MEGURI_")}


def run_meguri(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``meguri ARGS…`` run in ``cwd``; its exit status and output, never raising."""
    return subprocess.run(
        [*MEGURI, *args], cwd=cwd, capture_output=True, text=True, env=clean_env()
    )
