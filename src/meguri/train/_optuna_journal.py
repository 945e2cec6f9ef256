"""Optuna's journal storage over the metadata store: studies and trials live in our store.

:class:`MetadataJournalBackend` implements ``optuna.storages.journal.BaseJournalBackend`` on
the store's ``tuning`` repository; wrap it in ``optuna.storages.JournalStorage`` and every
study of the project (its trials, params, intermediate values, states) is kept in the
project's tuning journal: on SQLite and PostgreSQL, and through the platform server when the
store is a :class:`~meguri.store.remote.RemoteMetadataStore`. There is one implementation of
the journal, :class:`~meguri.store.metadata.repositories.tuning.TuningJournalRepository`,
whose docstring states the contract ``JournalStorage`` relies on (gapless numbers under
concurrent appenders, a reader always sees a prefix, NaN and infinities kept).

``JournalStorage`` may be pickled to reach other processes, so the backend pickles as what
reopens its store there: a local store's URL (password included: the copy must connect), or
a remote store's server URL alone. The API token is never pickled: the copy reads
``MEGURI_TOKEN`` from its environment (``meguri.train.tune`` puts it there for the workers it
starts; see :meth:`RemoteMetadataStore.worker_environment`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from meguri.errors import ConfigError
from meguri.store.metadata import MetadataStore
from meguri.store.metadata._engine import Database, create_engine
from meguri.store.remote import RemoteMetadataStore
from meguri.store.remote._client import SERVER_VARIABLE, TOKEN_VARIABLE

__all__ = ["MetadataJournalBackend", "journal_storage"]


class MetadataJournalBackend(BaseJournalBackend):
    """The optuna journal of project ``project_id`` in the metadata store ``store``."""

    def __init__(self, store: MetadataStore, project_id: str) -> None:
        self._store = store
        self._project_id = project_id

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        """The logs numbered ``log_number_from`` and after, in order."""
        return self._store.tuning.read_logs(self._project_id, log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Store ``logs`` as the next numbers of the journal, in one transaction."""
        if logs:  # nothing to send: spare a remote store the round trip
            self._store.tuning.append_logs(self._project_id, logs)

    def __getstate__(self) -> dict[str, str]:
        """Pickled as where the store is (see the module docstring), never its token."""
        return {**_reference(self._store), "project_id": self._project_id}

    def __setstate__(self, state: dict[str, str]) -> None:
        self._store = _reopen(state)
        self._project_id = state["project_id"]
        weakref.finalize(self, self._store.close)  # this copy owns its connections

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project_id={self._project_id!r})"


def _reference(store: MetadataStore) -> dict[str, str]:
    """What reopens ``store`` in another process: ``{"server": url}`` for a remote store (the
    token comes from that process's environment), else ``{"url": store URL}``."""
    if isinstance(store, RemoteMetadataStore):
        return {"server": store.url}
    return {"url": store.db.engine.url.render_as_string(hide_password=False)}


def _reopen(reference: dict[str, str]) -> MetadataStore:
    """The store a :func:`_reference` names, opened in this process."""
    server = reference.get("server")
    if server is None:
        # migrated already by the process that pickled it: connect only, as a worker should
        return MetadataStore(Database(create_engine(reference["url"])))
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise ConfigError(
            f"This process reopens the metadata store of the meguri server at {server} but "
            f"{TOKEN_VARIABLE} is not set here: start it with {TOKEN_VARIABLE} (and "
            f"{SERVER_VARIABLE}) in its environment (Ray: runtime_env={{'env_vars': ...}})"
        )
    return RemoteMetadataStore(server, token)


def journal_storage(store: MetadataStore, project_id: str) -> JournalStorage:
    """An optuna storage keeping the studies of ``project_id`` in the metadata store."""
    return JournalStorage(MetadataJournalBackend(store, project_id))
