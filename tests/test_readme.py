"""The README's tutorial runs as written (docs that run)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from meguri.testing.cli import clean_env, run_meguri

README = Path(__file__).parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_opens_with_the_two_commands() -> None:
    first = _blocks("bash")[0]
    assert first.splitlines()[0].startswith("make demo")
    assert first.splitlines()[1].startswith("make test")


def _shell(block: str, cwd: Path, expect: tuple[str, ...]) -> None:
    """Run the block's meguri commands; each must succeed and print one of ``expect``."""
    for line in block.splitlines():
        if not line.startswith("meguri ") or "RUN_A" in line:
            continue
        args = shlex.split(line.split("#")[0])[1:]
        out = run_meguri(*args, cwd=cwd)
        assert out.returncode == 0, (line, out.stderr)
        assert any(word in out.stdout for word in expect), (line, out.stdout)


def _python(block: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", block], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tutorials_run(tmp_path: Path) -> None:
    tracking, data = _blocks("python")
    shells = _blocks("bash")
    (tmp_path / "tracking").mkdir()
    _python(tracking, tmp_path / "tracking")
    _shell(shells[1], tmp_path / "tracking", ("baseline", "loss"))
    (tmp_path / "data").mkdir()
    _shell(shells[2], tmp_path / "data", ("meguri.yaml", "breast_cancer", "rows"))
    assert (tmp_path / "data" / "profile.html").stat().st_size > 1_000_000
    assert float(_python(data, tmp_path / "data")) > 10


def test_train_tutorial_runs(tmp_path: Path) -> None:
    """The train tutorial on a copy of the Adult example (its `cd` line is the copy here)."""
    example = README.parent / "examples" / "adult" / "meguri.yaml"
    (tmp_path / "meguri.yaml").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    _shell(_blocks("bash")[3], tmp_path, ("lightgbm", "train"))
