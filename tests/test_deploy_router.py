"""The weighted router over real uvicorn on loopback: weights, shadow, metrics, swaps."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import httpx
import numpy as np

from meguri.serve import LoadedModel, Prediction, ServeSettings, create_app
from meguri.serve._model import Array
from meguri.serve._router import Backend, Route, Router
from meguri.serve._signature import Column, Output, Signature
from test_serve_support import running

SIGNATURE = Signature((Column("x", "double"),), Output("regression"))


class Scaled(LoadedModel):
    """Predicts ``x * factor``; raises on a negative ``x`` when ``broken``."""

    def __init__(self, version: str, factor: float, broken: bool = False) -> None:
        super().__init__("m", version, SIGNATURE, "test")
        self.factor, self.broken = factor, broken

    def predict(self, batch: Mapping[str, Array]) -> Prediction:
        x = batch["x"]
        if self.broken and (x < 0).any():
            raise RuntimeError("broken on negative inputs")
        return Prediction(values=x * self.factor)


def _backend(version: str, factor: float, broken: bool = False) -> Backend:
    model = Scaled(version, factor, broken)
    app = create_app(model, settings=ServeSettings(max_wait_ms=0.0))
    return Backend(key=f"mv-{version}", label=f"m@{version}", app=app)


def _ask(client: httpx.Client, x: float) -> httpx.Response:
    return client.post("/invocations", json={"inputs": {"x": [x]}})


def test_weights_split_requests_exactly_and_metrics_label_versions() -> None:
    one, two = _backend("1", 1.0), _backend("2", 2.0)
    router = Router([Route(one, 75, "primary"), Route(two, 25, "canary")])
    with running(router) as url, httpx.Client(base_url=url) as client:
        answers = [_ask(client, 1.0).json()["predictions"][0] for _ in range(200)]
        assert answers.count(2.0) == 50 and answers.count(1.0) == 150
        assert client.post("/invocations", json={"inputs": {"y": [1.0]}}).status_code == 400
        metrics = client.get("/metrics").text
    assert 'meguri_route_requests_total{model_version="m@2",role="canary"} 50' in metrics
    assert 'meguri_route_weight_percent{model_version="m@1",role="primary"} 75' in metrics
    assert "meguri_route_schema_violations_total" in metrics
    snap = router.snapshot()
    assert snap["mv-1"]["violations"] + snap["mv-2"]["violations"] == 1
    assert snap["mv-1"]["requests"] + snap["mv-2"]["requests"] == 201


def test_a_broken_canary_counts_errors_the_primary_does_not() -> None:
    good, bad = _backend("1", 1.0), _backend("2", 1.0, broken=True)
    router = Router([Route(good, 50, "primary"), Route(bad, 50, "canary")])
    with running(router) as url, httpx.Client(base_url=url) as client:
        statuses = [_ask(client, -1.0).status_code for _ in range(100)]
    assert statuses.count(500) == 50
    snap = router.snapshot()
    assert (snap["mv-2"]["errors"], snap["mv-1"]["errors"]) == (50, 0)


def test_shadow_sees_every_request_and_only_the_primary_answers() -> None:
    primary, shadow = _backend("1", 1.0), _backend("2", 3.0)
    router = Router([Route(primary, 100, "primary"), Route(shadow, 0, "shadow")])
    with running(router) as url, httpx.Client(base_url=url) as client:
        answers = {_ask(client, 1.0).json()["predictions"][0] for _ in range(30)}
        same = [_ask(client, 0.0).json()["predictions"][0] for _ in range(10)]
        # the shadow answers after the primary: its last comparison may still be on its way
        wanted = (
            'meguri_shadow_comparisons_total{model_version="m@2",role="shadow",result="same"} 10'
        )
        deadline = time.monotonic() + 5
        while wanted not in (metrics := client.get("/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.02)
    assert answers == {1.0} and set(same) == {0.0}
    stats = router.snapshot()["mv-2"]
    assert stats["requests"] == 40
    assert stats["shadow"] == {"different": 30, "same": 10}


def test_swapping_under_load_drops_no_request() -> None:
    one, two = _backend("1", 1.0), _backend("2", 2.0)
    router = Router([Route(one, 100, "primary")])
    failures: list[int] = []
    seen: set[float] = set()
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url) as client:
            while not stop.is_set():
                response = _ask(client, 1.0)
                if response.status_code != 200:
                    failures.append(response.status_code)
                else:
                    seen.add(response.json()["predictions"][0])

    with running(router) as url:
        threads = [threading.Thread(target=load, args=(url,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for generation in range(1, 41):  # 40 swaps back and forth while 4 clients send
            new = two if generation % 2 else one
            router.swap([Route(new, 100, "primary")], generation)
            stop.wait(0.02)
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == [] and seen == {1.0, 2.0}
    total = sum(s["requests"] for s in router.snapshot().values())
    assert total > 100 and router.generation == 40


def test_the_weights_are_a_permutation_per_hundred() -> None:
    positions = sorted((i * 37) % 100 for i in range(100))
    assert np.array_equal(positions, np.arange(100))
