"""Bad input never gets a 5xx: hypothesis bodies, schemathesis on /openapi.json, stable memory."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import httpx
import orjson
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meguri.serve import ServeSettings, create_app
from test_serve_support import FEATURES, mixed_model, onnx_model, running

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
ROW = [1.0] * 30


@pytest.fixture(scope="module")
def urls() -> Iterator[tuple[str, str]]:
    limits = ServeSettings(max_body_bytes=1 << 20, max_rows=1000, max_columns=200)
    with running(create_app(onnx_model(), settings=limits)) as a:
        with running(create_app(mixed_model(), settings=limits)) as b:
            yield a, b


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=40,
)
odd_numbers = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-0.0",
        "١٢٣",
        "１２",
        "1_000",
        "0x10",
        "+1",
        ".5",
        "1e-400",
        "",
        " ",
        "nan",
        "inf",
    ]
)


def _assert_4xx_or_ok(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"]


@FAST
@given(doc=json_values)
def test_any_json_document(urls: tuple[str, str], client: httpx.Client, doc: object) -> None:
    for url in urls:
        for wrap in (doc, {"instances": doc}, {"inputs": doc}, {"dataframe_split": {"data": doc}}):
            _assert_4xx_or_ok(
                client.post(
                    f"{url}/invocations",
                    content=orjson.dumps(wrap),
                    headers={"content-type": "application/json"},
                )
            )
        v2 = {"inputs": [{"name": "f00", "shape": [1], "datatype": "FP64", "data": doc}]}
        _assert_4xx_or_ok(client.post(f"{url}/v2/models/cancer/infer", content=orjson.dumps(v2)))


@FAST
@given(
    body=st.binary(max_size=400),
    ctype=st.sampled_from(
        ["application/json", "text/csv", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
)
def test_any_bytes_any_content_type(
    urls: tuple[str, str], client: httpx.Client, body: bytes, ctype: str
) -> None:
    for url in urls:
        _assert_4xx_or_ok(
            client.post(f"{url}/invocations", content=body, headers={"content-type": ctype})
        )


@FAST
@given(number=odd_numbers, column=st.integers(0, 29))
def test_odd_numbers_in_csv_and_json(
    urls: tuple[str, str], client: httpx.Client, number: str, column: int
) -> None:
    fields = ["1"] * 30
    fields[column] = number
    response = client.post(
        f"{urls[0]}/invocations", content=",".join(fields), headers={"content-type": "text/csv"}
    )
    _assert_4xx_or_ok(response)
    if response.status_code == 400 and response.json()["error"]["code"] != "wrong_width":
        assert response.json()["error"]["column"] == FEATURES[column]
    literal = "[[" + ",".join(fields) + "]]"
    _assert_4xx_or_ok(
        client.post(
            f"{urls[0]}/invocations", content=literal, headers={"content-type": "application/json"}
        )
    )


def test_named_nasty_inputs(urls: tuple[str, str], client: httpx.Client) -> None:
    url = urls[0]
    cases = {
        "10,000 columns": orjson.dumps({"inputs": {f"c{i}": [1.0] for i in range(10_000)}}),
        "100 MB body": b"[" + b"1," * (50 << 20) + b"1]",
        "NaN": b"[[NaN" + b",1" * 29 + b"]]",
        "Infinity": b'{"instances": [[Infinity' + b",1" * 29 + b"]]}",
        "deep nesting": b"[" * 5000 + b"]" * 5000,
        "huge integer": b"[[" + b"9" * 400 + b",1" * 29 + b"]]",
    }
    for name, body in cases.items():
        response = client.post(
            f"{url}/invocations", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (name, response.text)
    zero = client.post(f"{url}/invocations", json=[[-0.0, *ROW[1:]]])
    assert zero.status_code == 200


def test_schemathesis_finds_no_server_error(urls: tuple[str, str], client: httpx.Client) -> None:
    doc = client.get(f"{urls[0]}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=urls[0])
            assert response.status_code < 500, (case.path, response.text)

        check()


def test_no_5xx_and_stable_memory_under_load(urls: tuple[str, str]) -> None:
    good = orjson.dumps([ROW])
    bad = orjson.dumps([[*ROW[:29], "x"]])
    process = psutil.Process()

    async def worker(ac: httpx.AsyncClient, count: int, out: list[int]) -> None:
        for i in range(count):
            response = await ac.post("/invocations", content=good if i % 4 else bad)
            out.append(response.status_code)

    async def wave(count: int) -> list[int]:
        out: list[int] = []
        async with httpx.AsyncClient(base_url=urls[0], timeout=30) as ac:
            await asyncio.gather(*(worker(ac, count // 32, out) for _ in range(32)))
        return out

    asyncio.run(wave(160))
    before = process.memory_info().rss
    statuses = [s for _ in range(3) for s in asyncio.run(wave(160))]
    after = process.memory_info().rss
    assert set(statuses) == {200, 400}
    assert statuses.count(400) == 3 * 32 * len(range(0, 160 // 32, 4))
    assert after < before * 1.10, f"RSS grew from {before} to {after}"
    assert math.isfinite(after)
