"""The generic fsspec path (here ``memory://``), URL dispatch, and a light import.

The whole artifact contract runs once more on fsspec's in-memory filesystem, which takes the
generic write path (a ``.tmp-…`` object moved into place): the ``artifact_store`` fixture is
overridden in this module.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from meguri.errors import ConfigError
from meguri.store.artifacts import ArtifactStore, FsspecArtifactStore, open_artifact_store
from meguri.testing.contract_artifacts import *  # noqa: F403


@pytest.fixture
def artifact_store() -> ArtifactStore:
    store = open_artifact_store(f"memory://meguri-{uuid.uuid4().hex}/artifacts")
    assert type(store) is FsspecArtifactStore
    return store


def test_generic_gc_temp_removes_stale_temp_objects(artifact_store: ArtifactStore) -> None:
    assert isinstance(artifact_store, FsspecArtifactStore)
    temp = f"{artifact_store.root}/sha256/ab/.tmp-deadwriter"
    artifact_store.fs.pipe_file(temp, b"partial")
    assert artifact_store.gc_temp(older_than_s=3600) == 0
    assert artifact_store.gc_temp(older_than_s=0) == 1
    assert not artifact_store.fs.exists(temp)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "URL is empty"),
        ("nope://bucket/x", "Protocol not known: nope"),
        ("gcs://bucket/x", "needs a package that is not installed.*gcsfs"),
    ],
)
def test_unusable_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_artifact_store(url)


def test_storage_options_are_for_remote_stores(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="remote artifact stores only"):
        open_artifact_store(str(tmp_path), storage_options={"anon": True})


def test_import_loads_no_filesystem_library() -> None:
    code = (
        "import sys, meguri.store.artifacts\n"
        "print(sorted(m for m in ('fsspec', 's3fs', 'botocore', 'aiobotocore') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
