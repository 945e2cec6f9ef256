"""The metadata store: one database, one repository per aggregate."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from meguri.store.metadata._engine import Database, create_engine, normalise_url
from meguri.store.metadata._migrate import migrate

if TYPE_CHECKING:
    from meguri.store.metadata.repositories.access import AccessRepository
    from meguri.store.metadata.repositories.audit import AuditRepository
    from meguri.store.metadata.repositories.checks import CheckRepository
    from meguri.store.metadata.repositories.datasets import DatasetRepository
    from meguri.store.metadata.repositories.deployments import DeploymentRepository
    from meguri.store.metadata.repositories.documents import DocumentRepository
    from meguri.store.metadata.repositories.models import ModelRepository
    from meguri.store.metadata.repositories.monitor import MonitorRepository
    from meguri.store.metadata.repositories.projects import ProjectRepository
    from meguri.store.metadata.repositories.runs import RunRepository
    from meguri.store.metadata.repositories.specs import SpecRepository
    from meguri.store.metadata.repositories.tuning import TuningJournalRepository


class MetadataStore:
    """Entry point to every repository. Build it with :func:`open_metadata_store`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def url(self) -> str:
        return self.db.engine.url.render_as_string(hide_password=True)

    @cached_property
    def projects(self) -> ProjectRepository:
        from meguri.store.metadata.repositories.projects import ProjectRepository

        return ProjectRepository(self.db)

    @cached_property
    def specs(self) -> SpecRepository:
        from meguri.store.metadata.repositories.specs import SpecRepository

        return SpecRepository(self.db)

    @cached_property
    def documents(self) -> DocumentRepository:
        from meguri.store.metadata.repositories.documents import DocumentRepository

        return DocumentRepository(self.db)

    @cached_property
    def checks(self) -> CheckRepository:
        from meguri.store.metadata.repositories.checks import CheckRepository

        return CheckRepository(self.db)

    @cached_property
    def runs(self) -> RunRepository:
        from meguri.store.metadata.repositories.runs import RunRepository

        return RunRepository(self.db)

    @cached_property
    def datasets(self) -> DatasetRepository:
        from meguri.store.metadata.repositories.datasets import DatasetRepository

        return DatasetRepository(self.db)

    @cached_property
    def models(self) -> ModelRepository:
        from meguri.store.metadata.repositories.models import ModelRepository

        return ModelRepository(self.db)

    @cached_property
    def deployments(self) -> DeploymentRepository:
        from meguri.store.metadata.repositories.deployments import DeploymentRepository

        return DeploymentRepository(self.db)

    @cached_property
    def monitor(self) -> MonitorRepository:
        from meguri.store.metadata.repositories.monitor import MonitorRepository

        return MonitorRepository(self.db)

    @cached_property
    def access(self) -> AccessRepository:
        from meguri.store.metadata.repositories.access import AccessRepository

        return AccessRepository(self.db)

    @cached_property
    def audit(self) -> AuditRepository:
        from meguri.store.metadata.repositories.audit import AuditRepository

        return AuditRepository(self.db)

    @cached_property
    def tuning(self) -> TuningJournalRepository:
        from meguri.store.metadata.repositories.tuning import TuningJournalRepository

        return TuningJournalRepository(self.db)

    def close(self) -> None:
        self.db.dispose()


def open_metadata_store(url: str) -> MetadataStore:
    """Open (creating and migrating if needed) the metadata store at ``url``."""
    engine = create_engine(normalise_url(url))
    migrate(engine)
    return MetadataStore(Database(engine))
