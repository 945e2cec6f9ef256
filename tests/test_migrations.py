"""Migrations build exactly ``_schema.py``, run once under a lock and refuse a newer store."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from meguri.errors import MetadataStoreError
from meguri.store.metadata import open_metadata_store
from meguri.store.metadata._engine import create_engine, sqlite_path
from meguri.store.metadata._migrate import (
    _MIGRATIONS,
    HEAD_REVISION,
    LOCK_KEY,
    current_revision,
    lock_path,
    migrate,
)
from meguri.store.metadata._schema import metadata

PROCESSES = 8

# Each child imports everything first, says "ready", then waits for "go" on stdin, so that the
# eight opens of the brand-new store start together rather than staggered by import time.
_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from meguri.store.metadata import open_metadata_store
    from meguri.store.metadata._engine import create_engine
    from meguri.store.metadata._migrate import migrate

    url = sys.argv[1]
    print("ready", flush=True)
    sys.stdin.readline()
    engine = create_engine(url)
    migrated = migrate(engine)
    engine.dispose()
    store = open_metadata_store(url)
    project = store.projects.ensure(f"p{os.getpid()}", "child")
    store.close()
    print(json.dumps({"migrated": migrated, "project": project.id}), flush=True)
    """
)


@pytest.fixture
def engine(metadata_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(metadata_url)
    yield eng
    eng.dispose()


def _revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return current_revision(conn)


def _schema_differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_head_revision_constant_matches_the_scripts() -> None:
    scripts = ScriptDirectory(str(_MIGRATIONS))
    assert scripts.get_heads() == [HEAD_REVISION], "update HEAD_REVISION in _migrate.py"


def test_migrations_build_exactly_the_schema_module(engine: sa.Engine) -> None:
    assert migrate(engine) is True
    assert _revision(engine) == HEAD_REVISION
    assert _schema_differences(engine) == []
    assert set(sa.inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}


def test_migrate_twice_upgrades_once(engine: sa.Engine) -> None:
    assert migrate(engine) is True
    assert migrate(engine) is False
    assert _revision(engine) == HEAD_REVISION


def test_downgrade_to_base_and_back(engine: sa.Engine) -> None:
    from alembic import command

    from meguri.store.metadata._migrate import _alembic_config

    migrate(engine)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    assert migrate(engine) is True
    assert _schema_differences(engine) == []


def test_newer_store_is_refused_with_the_fix(engine: sa.Engine, metadata_url: str) -> None:
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(MetadataStoreError, match="9999") as info:
        open_metadata_store(metadata_url)
    message = str(info.value)
    assert "newer meguri" in message
    assert "pip install -U meguri" in message
    assert "\n" not in message


def _spawn_children(url: str, count: int) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]


def _release_and_collect(children: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
def test_eight_processes_open_a_brand_new_store_at_once(
    metadata_url: str, engine: sa.Engine
) -> None:
    children = _spawn_children(metadata_url, PROCESSES)
    try:
        results = _release_and_collect(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
    assert sum(bool(r["migrated"]) for r in results) == 1  # the others found it done
    assert _revision(engine) == HEAD_REVISION
    assert _schema_differences(engine) == []
    store = open_metadata_store(metadata_url)
    try:
        assert len(store.projects.list()) == PROCESSES
    finally:
        store.close()
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@contextmanager
def _hold_migration_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold the lock that ``migrate`` takes, as another process would."""
    if engine.dialect.name == "sqlite":
        path = sqlite_path(engine.url)
        assert path is not None
        with open(lock_path(path), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with engine.connect() as conn:
        conn.execute(sa.select(sa.func.pg_advisory_lock(LOCK_KEY)))
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(LOCK_KEY)))
            conn.commit()


def _migrate_in_thread(engine: sa.Engine) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(migrate(engine)), daemon=True)
    thread.start()
    return thread, outcome


def test_upgrade_waits_for_the_lock(engine: sa.Engine) -> None:
    with _hold_migration_lock(engine):
        thread, outcome = _migrate_in_thread(engine)
        thread.join(0.5)
        assert thread.is_alive(), "migrate did not wait for the lock"
        assert outcome == []
        if engine.dialect.name == "sqlite":  # the new file is not even created outside the lock
            path = sqlite_path(engine.url)
            assert path is not None
            assert not path.exists() or path.stat().st_size == 0
    thread.join(30)
    assert outcome == [True]


def test_store_at_head_opens_without_the_lock(engine: sa.Engine) -> None:
    migrate(engine)
    with _hold_migration_lock(engine):
        thread, outcome = _migrate_in_thread(engine)
        thread.join(10)
    assert outcome == [False]


def test_a_schema_created_between_the_two_looks_counts_as_current(
    engine: sa.Engine, metadata_url: str
) -> None:
    """The race CI once hit with eight processes on PostgreSQL: this process's read of
    ``alembic_version`` fails because the table is missing, and another process commits the
    schema before this one checks for the table. The store is then current, not broken."""
    if engine.dialect.name == "sqlite":  # an empty file is migrated without a look
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
    other = create_engine(metadata_url)
    raced: list[bool] = []

    @sa.event.listens_for(engine, "handle_error")
    def _another_process_migrates(context: sa.engine.ExceptionContext) -> None:
        if not raced and "alembic_version" in (context.statement or ""):
            raced.append(migrate(other))

    try:
        assert migrate(engine) is False
    finally:
        other.dispose()
    assert raced == [True]
    assert _revision(engine) == HEAD_REVISION


def test_sqlite_lock_file_sits_next_to_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'meguri.db'}"
    open_metadata_store(url).close()
    assert (tmp_path / "nested" / "meguri.db.migrate.lock").is_file()
    assert lock_path(tmp_path / "x.db") == tmp_path / "x.db.migrate.lock"


def test_in_memory_store_survives_migration() -> None:
    store = open_metadata_store("sqlite://")
    try:
        assert store.projects.ensure("mem", "t").name == "mem"
    finally:
        store.close()


def test_upgrade_from_0003_keeps_the_data_and_adds_the_registry(
    engine: sa.Engine, metadata_url: str
) -> None:
    from alembic import command

    from meguri.store.metadata._migrate import _alembic_config

    config = _alembic_config()
    with engine.execution_options(meguri_write=True).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.execute(
            sa.text(
                "INSERT INTO projects (id, name, created_at, created_by) "
                "VALUES ('proj-old', 'old', 1.0, 'ann')"
            )
        )
    assert _revision(engine) == "0003"
    assert "models" not in sa.inspect(engine).get_table_names()
    assert migrate(engine) is True
    assert _schema_differences(engine) == []
    store = open_metadata_store(metadata_url)
    try:
        assert store.projects.ensure("old", "bob").id == "proj-old"
        assert store.models.list_models("proj-old") == []
    finally:
        store.close()


def test_upgrade_from_0005_keeps_the_deployments_and_adds_monitoring(
    engine: sa.Engine, metadata_url: str
) -> None:
    from alembic import command

    from meguri.store.metadata._migrate import _alembic_config
    from meguri.store.metadata.repositories.monitor import NewWindow

    config = _alembic_config()
    with engine.execution_options(meguri_write=True).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        conn.execute(
            sa.text(
                "INSERT INTO projects (id, name, created_at, created_by) "
                "VALUES ('proj-old', 'old', 1.0, 'ann')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO deployments (id, project_id, environment, model_name, state, port, "
                "pid, current_revision_id, current_number, updated_at, created_at, created_by) "
                "VALUES ('dep-old', 'proj-old', 'production', 'churn', 'serving', 8080, NULL, "
                "NULL, 0, 2.0, 2.0, 'ann')"
            )
        )
    assert _revision(engine) == "0005"
    assert "monitor_windows" not in sa.inspect(engine).get_table_names()
    assert migrate(engine) is True
    assert _revision(engine) == HEAD_REVISION
    assert _schema_differences(engine) == []
    store = open_metadata_store(metadata_url)
    try:
        assert store.deployments.get("proj-old", "production").port == 8080
        [window] = store.monitor.save_windows(
            [NewWindow("proj-old", "production", 0.0, 3600.0, 3, figures={"requests": 3.0})]
        )
        assert store.monitor.windows("proj-old", "production") == [window]
        assert store.monitor.alerts("proj-old") == []
    finally:
        store.close()


def test_upgrade_from_0006_keeps_the_data_and_starts_an_empty_audit_chain(
    engine: sa.Engine, metadata_url: str
) -> None:
    from alembic import command

    from meguri.store.metadata._migrate import _alembic_config

    config = _alembic_config()
    with engine.execution_options(meguri_write=True).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
        for statement in (
            "INSERT INTO projects (id, name, created_at, created_by) "
            "VALUES ('proj-old', 'old', 1.0, 'ann')",
            "INSERT INTO spec_versions (id, project_id, hash, content, message, created_at, "
            "created_by) VALUES ('spec-old', 'proj-old', 'h', 'project: old', NULL, 2.0, 'ann')",
            "INSERT INTO experiments (id, project_id, name, created_at, created_by) "
            "VALUES ('exp-old', 'proj-old', 'train', 3.0, 'ann')",
            "INSERT INTO runs (id, experiment_id, name, status, created_at, created_by) "
            "VALUES ('run-old', 'exp-old', 'first', 'finished', 4.0, 'ann')",
        ):
            conn.execute(sa.text(statement))
    assert _revision(engine) == "0006"
    assert "audit_events" not in sa.inspect(engine).get_table_names()
    assert migrate(engine) is True
    assert _revision(engine) == HEAD_REVISION
    assert _schema_differences(engine) == []
    store = open_metadata_store(metadata_url)
    try:
        assert store.projects.ensure("old", "bob").id == "proj-old"
        assert store.specs.get("spec-old").content == "project: old"
        assert store.runs.get_run("run-old").name == "first"
        assert store.access.list_users() == []  # still no default user
        assert store.audit.events() == [] and store.audit.head() == (0, "0" * 64)
        assert store.audit.verify().ok
        store.runs.log_batch("run-old", tags={"migrated": "yes"})
        [event] = store.audit.events()
        assert (event.seq, event.action, event.actor) == (1, "run.logged", "ann")
        assert (event.project_id, event.prev_hash) == ("proj-old", "0" * 64)
        assert store.audit.verify().ok
    finally:
        store.close()


def test_upgrade_from_0007_keeps_runs_active_and_adds_their_lifecycle(
    engine: sa.Engine, metadata_url: str
) -> None:
    from alembic import command

    from meguri.store.metadata._migrate import _alembic_config

    config = _alembic_config()
    with engine.execution_options(meguri_write=True).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
        for statement in (
            "INSERT INTO projects (id, name, created_at, created_by) "
            "VALUES ('proj-old', 'old', 1.0, 'ann')",
            "INSERT INTO experiments (id, project_id, name, created_at, created_by) "
            "VALUES ('exp-old', 'proj-old', 'train', 3.0, 'ann')",
            "INSERT INTO runs (id, experiment_id, name, status, created_at, created_by) "
            "VALUES ('run-old', 'exp-old', 'first', 'finished', 4.0, 'ann')",
            "INSERT INTO run_tags (run_id, key, value) VALUES ('run-old', 'team', 'risk')",
        ):
            conn.execute(sa.text(statement))
    assert _revision(engine) == "0007"
    assert "experiment_tags" not in sa.inspect(engine).get_table_names()
    assert migrate(engine) is True
    assert _revision(engine) == HEAD_REVISION
    assert _schema_differences(engine) == []
    store = open_metadata_store(metadata_url)
    try:
        [experiment] = store.runs.list_experiments("proj-old")
        assert (experiment.id, experiment.deleted_at) == ("exp-old", None)
        [run] = store.runs.search(["exp-old"])  # an old run is active
        assert (run.id, run.name, run.tags, run.deleted_at) == (
            "run-old",
            "first",
            {"team": "risk"},
            None,
        )
        assert store.runs.experiment_tags(["exp-old"]) == {}
        assert store.runs.delete_run("run-old", by="bob") is True
        assert store.runs.search(["exp-old"]) == []
        assert store.runs.search(["exp-old"], view="deleted")[0].id == "run-old"
        assert store.audit.verify().ok
    finally:
        store.close()


def test_run_entity_fields_follow_the_runs_columns() -> None:
    """Runs are loaded positionally (``_run_rows``): a column added to the table needs its
    field on :class:`Run`, at the same place."""
    from dataclasses import fields

    from meguri.store.metadata import Run
    from meguri.store.metadata._schema import runs

    names = [f.name for f in fields(Run)]
    assert names[: len(runs.c)] == [c.name for c in runs.c]


def test_upgrade_from_0008_keeps_the_users_and_voids_no_session(
    engine: sa.Engine, metadata_url: str
) -> None:
    from alembic import command

    from meguri.store.metadata._migrate import _alembic_config

    config = _alembic_config()
    with engine.execution_options(meguri_write=True).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0008")
        conn.execute(
            sa.text(
                "INSERT INTO users (id, name, email, is_admin, disabled, password_hash, "
                "created_at, created_by) VALUES ('usr-old', 'ann', NULL, false, false, NULL, "
                "1.0, 'root')"
            )
        )
    assert _revision(engine) == "0008"
    assert migrate(engine) is True
    assert _revision(engine) == HEAD_REVISION
    assert _schema_differences(engine) == []
    store = open_metadata_store(metadata_url)
    try:
        user = store.access.get_user("ann")
        assert (user.id, user.sessions_since) == ("usr-old", None)
        store.access.end_session("ann", "sid-1", 2e9)
        assert store.access.session_ended("sid-1")
    finally:
        store.close()
