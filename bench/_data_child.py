"""What both sides of the data benchmark share inside their own process: stage clocks and the
peak resident memory (``ru_maxrss``, the kernel's high-water mark of this process alone).

Each side is run as ``python bench/_data_<side>.py CSV [release]`` in a fresh interpreter; it
prints one JSON object on its last line of stdout: the stage timings, the peak RSS after each
stage, and the figures the parent compares to check that both sides did the same work.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

PARTS = ("train", "validation", "test")


def peak_rss() -> int:
    """The highest resident set size of this process so far, in bytes (Linux: KiB * 1024)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


class Stages:
    """Wall and CPU time (all threads) of each stage, and the peak RSS reached by its end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.rss_before = current_rss()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.cpu[name] = time.process_time() - cpu
        self.peak[name] = peak_rss()

    def report(self, checks: dict[str, Any]) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "total": sum(self.seconds.values()),
            "cpu_seconds": self.cpu,
            "peak_rss_after": self.peak,
            "peak_rss": peak_rss(),
            "rss_after_imports": self.rss_before,
            "checks": checks,
        }


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write("\n" + json.dumps(payload, default=_plain) + "\n")
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def run(main: Callable[..., dict[str, Any]]) -> None:
    """The entry point of a side: ``main(csv_path, release)`` returns the report to print.

    ``python _data_<side>.py CSV [release] [persist]``: with ``release``, the side drops the
    whole table once it is split and each raw part once it is cleaned (both sides alike);
    without, it keeps every intermediate to the end, as ``meguri.data.prepare`` does.
    ``persist`` (pandas only) also stores what meguri's dataset versions store.
    """
    flags = set(sys.argv[2:])
    extra = {"persist": True} if "persist" in flags else {}
    emit(main(sys.argv[1], "release" in flags, **extra))
