"""The public surface: exactly the names in ``__all__``, and a light ``import meguri``."""

from __future__ import annotations

import subprocess
import sys

import meguri
import meguri.errors


def test_exported_names_are_exactly_all() -> None:
    public = {name for name in dir(meguri) if not name.startswith("_")} | {"__version__"}
    assert public == set(meguri.__all__)
    for name in meguri.__all__:
        assert getattr(meguri, name) is not None


def test_every_error_derives_from_the_root() -> None:
    for name in meguri.errors.__all__:
        cls = getattr(meguri.errors, name)
        assert issubclass(cls, meguri.errors.MeguriError)


def test_import_meguri_loads_no_heavy_library() -> None:
    code = (
        "import sys, meguri; "
        "heavy = [m for m in ('sqlalchemy', 'pydantic', 'numpy', 'polars', 'pyarrow', 'sklearn',"
        " 'fsspec', 'yaml') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_run_fields_follow_the_runs_table() -> None:
    """The run loader builds Run positionally from the table's columns."""
    from dataclasses import fields

    from meguri.store.metadata._schema import runs

    names = [f.name for f in fields(meguri.Run)]
    assert names[: len(runs.c)] == [c.name for c in runs.c]
