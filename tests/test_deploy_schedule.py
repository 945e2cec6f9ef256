"""Schedules of ``meguri run``: the cron matcher and the foreground loop."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime

import pytest

from meguri.deploy._schedule import Schedule, parse_cron, run_schedule
from meguri.errors import PipelineError


@pytest.mark.parametrize(
    ("expression", "after", "due"),
    [
        ("0 3 * * *", "2024-05-01 02:59", "2024-05-01 03:00"),
        ("0 3 * * *", "2024-05-01 03:00", "2024-05-02 03:00"),
        ("*/15 * * * *", "2024-05-01 10:07", "2024-05-01 10:15"),
        ("30 9-17/4 * * *", "2024-05-01 13:31", "2024-05-01 17:30"),
        ("0 0 1 * *", "2024-01-31 12:00", "2024-02-01 00:00"),
        ("0 0 29 2 *", "2023-03-01 00:00", "2024-02-29 00:00"),
        ("0 8 * * mon-fri", "2024-05-03 09:00", "2024-05-06 08:00"),  # Friday → Monday
        ("0 8 * * 7", "2024-05-01 00:00", "2024-05-05 08:00"),  # 7 is Sunday
        ("5,10 0 * jan,dec *", "2024-06-01 00:00", "2024-12-01 00:05"),
        ("0 0 13 * 5", "2024-09-12 00:00", "2024-09-13 00:00"),  # day OR weekday: Fri 13th
        ("0 0 13 * 5", "2024-09-13 00:00", "2024-09-20 00:00"),  # next Friday
    ],
)
def test_cron_next_due(expression: str, after: str, due: str) -> None:
    cron = parse_cron(expression)
    start = datetime.strptime(after, "%Y-%m-%d %H:%M")
    assert cron.next_after(start) == datetime.strptime(due, "%Y-%m-%d %H:%M")
    assert cron.matches(cron.next_after(start))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "has 4 fields"),
        ("60 * * * *", "minute field"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day of month field"),
        ("* * * 13 *", "month field"),
        ("* * * * funday", "day of week field"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "outside"),
    ],
)
def test_cron_errors_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_cron(expression)


def test_cron_that_never_comes_due() -> None:
    with pytest.raises(PipelineError, match="never comes due"):
        parse_cron("0 0 31 2 *").next_after(datetime(2024, 1, 1))


def test_schedule_parses_durations_and_cron() -> None:
    assert Schedule.parse("6h").interval == 6 * 3600
    assert Schedule.parse("0 3 * * *").cron is not None
    every = Schedule.parse("30m")
    assert every.next_due(100.0, None) == 100.0  # the first run at once
    assert every.next_due(200.0, 100.0) == 1900.0
    assert every.next_due(5000.0, 100.0) == 5000.0  # a late run: due now
    with pytest.raises(PipelineError, match="neither a duration"):
        Schedule.parse("daily")


def test_the_loop_runs_at_each_due_time() -> None:
    starts: list[float] = []
    dues: list[float] = []
    count = run_schedule(
        lambda: starts.append(time.monotonic()),
        Schedule.parse("0.2s"),
        max_runs=2,
        on_wait=dues.append,
    )
    assert count == 2 and len(dues) == 2
    assert 0.18 <= starts[1] - starts[0] < 1.0


def test_the_loop_stops_cleanly_on_sigterm() -> None:
    runs: list[int] = []

    def job() -> None:
        runs.append(1)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no earlier handler: ours only sets stop
    try:
        started = time.monotonic()
        count = run_schedule(job, Schedule.parse("1h"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert count == 1 and runs == [1]
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is previous
