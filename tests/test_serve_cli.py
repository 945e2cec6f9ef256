"""``meguri serve``: the command is registered and refuses an ambiguous model source."""

from __future__ import annotations

import subprocess
import sys


def test_serve_needs_exactly_one_model_source() -> None:
    code = "import sys; sys.argv = ['meguri', 'serve']; from meguri.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--model-dir" in done.stderr


def test_serve_help_lists_the_options() -> None:
    code = (
        "import sys; sys.argv = ['meguri', 'serve', '--help']; from meguri.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for option in (
        "--model-dir",
        "--port",
        "--workers",
        "--capture-rate",
        "--max-batch",
        "--token",
    ):
        assert option in done.stdout
