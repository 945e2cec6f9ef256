"""The README's tutorial runs as written (docs that run)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_opens_with_the_two_commands() -> None:
    first = _blocks("bash")[0]
    assert first.splitlines()[0].startswith("make demo")
    assert first.splitlines()[1].startswith("make test")


def test_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEGURI_")}
    [python] = _blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    shell = _blocks("bash")[1]
    for line in shell.splitlines():
        if not line.startswith("meguri ") or "RUN_A" in line:
            continue
        args = shlex.split(line)[1:]
        out = subprocess.run(
            [sys.executable, "-c", "from meguri.cli import main; main()", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, (line, out.stderr)
        assert "baseline" in out.stdout or "loss" in out.stdout, line
