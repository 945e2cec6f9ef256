"""Recurring pipeline runs: ``meguri run --every 1d`` or ``pipeline.schedule: "0 3 * * *"``.

A schedule is a duration (``30m``, ``6h``, ``1d``: the first run at once, then one every
interval after the previous start) or a cron expression of five fields, minute hour
day-of-month month day-of-week (``*``, ``a-b``, ``*/n``, ``a-b/n`` and lists ``a,b``; months and
week days also by name, ``jan``/``mon``; Sunday is 0 or 7; when both day fields are restricted
a day matching either is due, as in cron). Cron times are local time, to the minute.

:func:`run_schedule` is a foreground loop: it runs the job at each due time, tells the caller
the next one, and stops cleanly on Ctrl-C or SIGTERM (between runs at once; during a run, the
run is ended as killed by the tracking layer, then the loop stops).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from meguri.errors import PipelineError
from meguri.spec import duration_seconds

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
_HELP = "write five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the allowed values of each field."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool
    any_weekday: bool

    def matches(self, moment: datetime) -> bool:
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self._day(moment)
        )

    def _day(self, moment: datetime) -> bool:
        day = moment.day in self.days
        weekday = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday

    def next_after(self, moment: datetime) -> datetime:
        """The first due minute strictly after ``moment``."""
        current = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = current + timedelta(days=366 * 5)
        while current < limit:
            if current.month not in self.months or not self._day(current):
                current = current.replace(hour=0, minute=0) + timedelta(days=1)
            elif current.hour not in self.hours:
                current = current.replace(minute=0) + timedelta(hours=1)
            elif current.minute not in self.minutes:
                current += timedelta(minutes=1)
            else:
                return current
        raise PipelineError(f"The cron expression {self.text!r} never comes due; {_HELP}")


def _value(token: str, index: int) -> int:
    names = _NAMES.get(index)
    if names and token.lower() in names:
        return names.index(token.lower()) + (1 if index == 3 else 0)
    if not token.isdigit():
        raise ValueError(f"{token!r} is not a number")
    return int(token)


def _part(part: str, index: int) -> set[int]:
    name, low, high = _FIELDS[index]
    body, _, step_text = part.partition("/")
    step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
    if step_text and step is None:
        raise ValueError(f"the step {step_text!r} is not a positive number")
    if body == "*":
        start, end = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, end = _value(first, index), _value(last, index)
    else:
        start = end = _value(body, index)
        end = high if step else end
    if not low <= start <= end <= high:
        raise ValueError(f"{part!r} is outside {low}-{high} for the {name}")
    return set(range(start, end + 1, step or 1))


def parse_cron(text: str) -> Cron:
    """Parse a five-field cron expression; a :class:`PipelineError` names the field at fault."""
    fields = text.split()
    if len(fields) != 5:
        raise PipelineError(f"pipeline.schedule: {text!r} has {len(fields)} fields; {_HELP}")
    values: list[frozenset[int]] = []
    for index, field in enumerate(fields):
        try:
            values.append(frozenset().union(*(_part(p, index) for p in field.split(","))))
        except ValueError as err:
            raise PipelineError(
                f"pipeline.schedule: {text!r}, {_FIELDS[index][0]} field: {err}; {_HELP}"
            ) from None
    weekdays = frozenset(d % 7 for d in values[4])
    minutes, hours, days, months = values[:4]
    return Cron(text, minutes, hours, days, months, weekdays, fields[2] == "*", fields[4] == "*")


@dataclass(frozen=True)
class Schedule:
    """A duration or a cron expression; :meth:`next_due` gives the next run time."""

    text: str
    interval: float | None = None
    cron: Cron | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        text = text.strip()
        if len(text.split()) == 5:
            return cls(text, cron=parse_cron(text))
        try:
            return cls(text, interval=duration_seconds(text))
        except ValueError:
            raise PipelineError(
                f"The schedule {text!r} is neither a duration (30m, 6h, 1d) nor a cron "
                f"expression; {_HELP}"
            ) from None

    def next_due(self, now: float, last_start: float | None) -> float:
        """The time (epoch seconds) of the next run after ``now``."""
        if self.interval is not None:
            return now if last_start is None else max(now, last_start + self.interval)
        assert self.cron is not None
        return self.cron.next_after(datetime.fromtimestamp(now)).timestamp()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while inside (main thread only); handlers restored after.

    A handler that was there before ours still runs (the tracking layer's ends runs in
    progress as killed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        earlier: Any = previous.get(signal.Signals(signum))
        if callable(earlier):
            earlier(signum, frame)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_schedule(
    job: Callable[[], object],
    schedule: Schedule,
    *,
    stop: threading.Event | None = None,
    max_runs: int | None = None,
    on_wait: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run ``job`` at each due time of ``schedule`` until ``stop`` is set, Ctrl-C or SIGTERM,
    or ``max_runs`` runs; ``on_wait(due)`` is told each next due time. Returns the run count.
    An exception from ``job`` (other than an interrupt) propagates: the caller decides
    whether a failed run stops the loop (:func:`run_pipeline` returns failures instead)."""
    stop = stop or threading.Event()
    runs, last = 0, None
    with stop_on_signals(stop):
        try:
            while not stop.is_set() and (max_runs is None or runs < max_runs):
                due = schedule.next_due(clock(), last)
                if on_wait is not None:
                    on_wait(due)
                if _wait_until(due, stop, clock):
                    break
                last = clock()
                job()
                runs += 1
        except (KeyboardInterrupt, SystemExit):
            stop.set()
    return runs


def _wait_until(due: float, stop: threading.Event, clock: Callable[[], float]) -> bool:
    """Wait for ``due`` in short slices (the clock may jump); True if stopped meanwhile."""
    while (left := due - clock()) > 0:
        if stop.wait(min(left, 1.0)):
            return True
    return stop.is_set()
