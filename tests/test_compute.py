"""The executor contract on the local process pool and on a real Ray in local mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meguri.compute import Executor, executor
from meguri.testing.contract_compute import *  # noqa: F403


@pytest.fixture(scope="module", params=["local", "ray"])
def engine(request: pytest.FixtureRequest) -> Iterator[Executor]:
    if request.param == "ray":
        pytest.importorskip("ray")
    options = {"num_cpus": 2} if request.param == "ray" else {"workers": 2}
    with executor(request.param, **options) as chosen:
        yield chosen
