"""The runs table: one page of an experiment's runs, filtered, sorted and with the columns the
user chose, read with one search of the run repository (paged in the database, so 100,000
runs cost what 50 do: see ``RunRepository.search``).

The filter is the run search language (``metrics.roc_auc >= 0.9 and params.model = 'lgbm'``);
a malformed one (or a malformed sort) gives an empty page whose ``error`` says what is wrong
(the page answers 400 with it).
The next page is read after the last run of this one (keyset paging, see :mod:`._keyset`): as
fast deep down the table as at its top; a page opened by its number alone is read by offset.
The columns to choose from are the keys of the experiment's newest runs and of the page
shown: listing every key of 100,000 runs would cost more than the page itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meguri.errors import NotFoundError, QuerySyntaxError
from meguri.store import Workspace
from meguri.store.metadata import Experiment, Run
from meguri.store.metadata.repositories.runs import RunRepository
from meguri.studio._keyset import MAX_TIES, AfterPlan, after_plan
from meguri.studio._render import duration, num, when

__all__ = ["PAGE_SIZES", "Column", "RunsPage", "RunsQuery", "runs_page"]

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
#: How many of the newest runs are read to offer their keys as columns.
KEY_SAMPLE = 200
#: Metrics and params shown when the user chose no columns.
DEFAULT_METRICS, DEFAULT_PARAMS = 4, 3

_PLAIN_KEY = re.compile(r"[\w./-]+")


@dataclass(frozen=True)
class RunsQuery:
    """What the user asked for (the page's query string)."""

    filter: str = ""
    sort: str = ""
    columns: tuple[str, ...] = ()
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE
    after: str = ""  # the last run of the previous page (keyset paging), when known

    @classmethod
    def of(
        cls,
        q: str | None,
        sort: str | None,
        cols: Sequence[str],
        page: int,
        size: int,
        after: str | None = None,
    ) -> RunsQuery:
        page = max(1, page)
        return cls(
            filter=(q or "").strip(),
            sort=(sort or "").strip(),
            columns=tuple(dict.fromkeys(c for c in cols if _is_key_column(c))),
            page=page,
            size=size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE,
            after=(after or "").strip() if page > 1 else "",
        )


@dataclass(frozen=True)
class Column:
    """A chosen column: ``key`` (``metrics.K``, ``params.K`` or ``tags.K``)."""

    key: str

    @property
    def kind(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    @property
    def order_key(self) -> str:
        """The column in the order-by language (unusual keys in backticks)."""
        name = self.name if _PLAIN_KEY.fullmatch(self.name) else f"`{self.name}`"
        return f"{self.kind}.{name}"

    def cell(self, run: Run) -> str:
        if self.kind == "metrics":
            point = run.metrics.get(self.name)
            return "" if point is None else num(point.value)
        source = run.params if self.kind == "params" else run.tags
        return source.get(self.name, "")


@dataclass(frozen=True)
class RunsPage:
    experiment: Experiment
    query: RunsQuery
    runs: list[Run]
    columns: list[Column]
    available: list[str]
    total: int
    has_next: bool
    error: str | None = None

    @property
    def first(self) -> int:
        return (self.query.page - 1) * self.query.size + 1 if self.runs else 0

    @property
    def last(self) -> int:
        return self.first + len(self.runs) - 1 if self.runs else 0

    def sort_link(self, key: str) -> str:
        """The sort after clicking ``key``'s header: descending first, then ascending."""
        return f"{key} asc" if self.query.sort == f"{key} desc" else f"{key} desc"

    def sorted_by(self, key: str) -> str:
        """``▼``/``▲`` when the table is sorted by ``key``."""
        if self.query.sort == f"{key} desc":
            return "▼"
        return "▲" if self.query.sort in (key, f"{key} asc") else ""


def attribute_cells(run: Run) -> dict[str, str]:
    """The fixed columns of a run's row."""
    took = run.wall_seconds
    if took is None and run.ended_at is not None:
        took = run.ended_at - run.created_at
    return {
        "status": run.status.value,
        "created": when(run.created_at),
        "user": run.created_by,
        "duration": duration(took),
    }


def runs_page(ws: Workspace, experiment: Experiment, query: RunsQuery) -> RunsPage:
    """One page of the experiment's runs as ``query`` asks."""
    repo = ws.metadata.runs
    error = None
    try:
        found = _search(repo, experiment, query)
    except QuerySyntaxError as err:
        found, error = [], str(err)
    runs = found[: query.size]
    sample = repo.search([experiment.id], max_results=KEY_SAMPLE)
    available = _keys([*runs, *sample])
    chosen = list(query.columns) or _default_columns(available)
    return RunsPage(
        experiment=experiment,
        query=query,
        runs=runs,
        columns=[Column(c) for c in chosen],
        available=sorted(set(available) | set(chosen)),
        total=repo.count([experiment.id]),
        has_next=len(found) > query.size,
        error=error,
    )


def _search(repo: RunRepository, experiment: Experiment, query: RunsQuery) -> list[Run]:
    """The page's runs and one more (which tells whether a next page exists): after the
    previous page's last run by keyset when the query names it (see :mod:`._keyset`), else
    by offset."""
    order = [query.sort] if query.sort else None
    want, offset = query.size + 1, (query.page - 1) * query.size
    plan = _keyset_plan(repo, experiment, query)
    if plan is not None:
        ties = repo.search([experiment.id], _and(query.filter, plan.ties), order, MAX_TIES + 1)
        if len(ties) <= MAX_TIES:
            return _after(repo, experiment, query, plan, ties)
    return repo.search([experiment.id], query.filter or None, order, want, offset)


def _after(
    repo: RunRepository, experiment: Experiment, query: RunsQuery, plan: AfterPlan, ties: list[Run]
) -> list[Run]:
    order = [query.sort] if query.sort else None
    want, offset = query.size + 1, (query.page - 1) * query.size
    found = plan.after_last(ties)[:want]
    if len(found) < want:
        beyond = _and(query.filter, plan.beyond)
        found += repo.search([experiment.id], beyond, order, want - len(found))
    if len(found) < want and plan.then_unvalued:  # the runs without a value: by offset
        more, skip = want - len(found), offset + len(found)
        found += repo.search([experiment.id], query.filter or None, order, more, skip)
    return found


def _and(user_filter: str, extra: str) -> str:
    return f"{user_filter} and {extra}" if user_filter else extra


def _keyset_plan(repo: RunRepository, experiment: Experiment, query: RunsQuery) -> AfterPlan | None:
    if not query.after:
        return None
    try:
        last = repo.get_run(query.after)
    except NotFoundError:
        return None
    return after_plan(query.sort, last) if last.experiment_id == experiment.id else None


def _keys(runs: Iterable[Run]) -> list[str]:
    keys: dict[str, None] = {}
    for run in runs:
        keys.update((f"metrics.{k}", None) for k in run.metrics)
        keys.update((f"params.{k}", None) for k in run.params)
        keys.update((f"tags.{k}", None) for k in run.tags)
    return list(keys)


def _default_columns(available: Sequence[str]) -> list[str]:
    metrics = sorted(k for k in available if k.startswith("metrics."))[:DEFAULT_METRICS]
    params = sorted(k for k in available if k.startswith("params."))[:DEFAULT_PARAMS]
    return [*metrics, *params]


def _is_key_column(text: str) -> bool:
    kind, _, name = text.partition(".")
    return kind in ("metrics", "params", "tags") and bool(name) and len(text) <= 300
