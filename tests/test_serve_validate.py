"""Request bodies to checked batches: every wire form, every refusal naming its column."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from meguri.serve._protocols import parse_invocation, parse_v2_infer
from meguri.serve._validate import BadRequest, Limits, Validator
from test_serve_support import FEATURES, mixed_model, onnx_model

NUMERIC = Validator(onnx_model().signature, Limits(max_columns=100, max_rows=50))
MIXED = Validator(mixed_model().signature)
ROW = [float(i) + 0.5 for i in range(30)]


def _json(doc: object, validator: Validator = NUMERIC) -> dict[str, np.ndarray]:
    return parse_invocation(orjson.dumps(doc), "application/json", validator)


def _refused(body: bytes, ctype: str = "application/json", v: Validator = NUMERIC) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_invocation(body, ctype, v)
    assert 400 <= caught.value.status < 500
    return caught.value


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": FEATURES, "data": [ROW, ROW]}},
        {"dataframe_split": {"data": [ROW, ROW]}},
        {"dataframe_split": {"columns": FEATURES[::-1], "data": [ROW[::-1], ROW[::-1]]}},
        {"dataframe_records": [dict(zip(FEATURES, ROW, strict=True))] * 2},
        {"instances": [ROW, ROW]},
        {"instances": [dict(zip(FEATURES, ROW, strict=True))] * 2},
        {"inputs": {n: [v, v] for n, v in zip(FEATURES, ROW, strict=True)}},
        {"inputs": [ROW, ROW], "params": {}},
        [ROW, ROW],
        [dict(zip(FEATURES, ROW, strict=True))] * 2,
    ],
)
def test_every_json_form_gives_the_same_batch(doc: object) -> None:
    batch = _json(doc)
    assert list(batch) == FEATURES
    for name, value in zip(FEATURES, ROW, strict=True):
        assert batch[name].dtype == np.float64
        assert batch[name].tolist() == [value, value]


def test_csv_with_and_without_header() -> None:
    plain = ",".join(map(str, ROW)).encode()
    batch = parse_invocation(plain + b"\n" + plain + b"\n", "text/csv", NUMERIC)
    assert batch["f29"].tolist() == [29.5, 29.5]
    header = ",".join(FEATURES[::-1]).encode()
    batch = parse_invocation(
        header + b"\n" + ",".join(map(str, ROW[::-1])).encode(), "text/csv; charset=utf-8", NUMERIC
    )
    assert batch["f00"].tolist() == [0.5]


def test_negative_zero_becomes_zero() -> None:
    row = [-0.0, *ROW[1:]]
    for batch in (_json([row]), parse_invocation(b"-0.0" + b",1" * 29, "text/csv", NUMERIC)):
        assert batch["f00"][0] == 0.0
        assert not np.signbit(batch["f00"][0])


@pytest.mark.parametrize(
    ("body", "ctype", "code", "column"),
    [
        (b"{not json", "application/json", "malformed_json", None),
        (b"[[NaN" + b",1" * 29 + b"]]", "application/json", "malformed_json", None),
        (b"[[Infinity" + b",1" * 29 + b"]]", "application/json", "malformed_json", None),
        (b"[[1e999" + b",1" * 29 + b"]]", "application/json", "malformed_json", None),
        (b'[["1"' + b",1" * 29 + b"]]", "application/json", "wrong_type", "f00"),
        (b"[[1" + b",true" + b",1" * 28 + b"]]", "application/json", "wrong_type", "f01"),
        (b"[[null" + b",1" * 29 + b"]]", "application/json", "null_value", "f00"),
        (b"[[1,2]]", "application/json", "wrong_width", None),
        (b"[[1],[1,2]]", "application/json", "ragged_rows", None),
        (b'{"foo": 1}', "application/json", "unknown_format", None),
        (b"\xd9\xa1" + b",1" * 29, "text/csv", "wrong_type", "f00"),
        (b"1,1_000" + b",1" * 28, "text/csv", "wrong_type", "f01"),
        (b"1,nan" + b",1" * 28, "text/csv", "not_finite", "f01"),
        (b"1,inf" + b",1" * 28, "text/csv", "not_finite", "f01"),
        (b"1,abc" + b",1" * 28, "text/csv", "wrong_type", "f01"),
        (b"1," + b",1" * 28, "text/csv", "null_value", "f01"),
        (b"1,2", "text/plain", "unsupported_media_type", None),
        (b"\xff\xfe", "text/csv", "malformed_csv", None),
        (b"", "text/csv", "no_rows", None),
        (b"[]", "application/json", "no_rows", None),
    ],
)
def test_refusals_name_the_problem(body: bytes, ctype: str, code: str, column: str | None) -> None:
    err = _refused(body, ctype)
    assert err.code == code, str(err)
    assert err.column == column
    if column:
        assert column in str(err)


def test_missing_extra_and_too_many_columns() -> None:
    record = dict(zip(FEATURES, ROW, strict=True))
    err = _refused(orjson.dumps([{k: v for k, v in record.items() if k != "f07"}]))
    assert (err.code, err.column) == ("missing_column", "f07")
    err = _refused(orjson.dumps([{**record, "bogus": 1}]))
    assert (err.code, err.column) == ("extra_column", "bogus")
    wide = {f"c{i}": [1.0] for i in range(10_000)}
    err = _refused(orjson.dumps({"inputs": wide}))
    assert (err.code, err.status) == ("too_many_columns", 413)
    err = _refused(orjson.dumps([ROW] * 51))
    assert (err.code, err.status) == ("too_many_rows", 413)


def test_mixed_types_from_json_and_csv() -> None:
    records = [
        {"amount": 1.5, "count": 2, "flag": True, "city": "Kyoto", "seen": "2024-05-01T12:00:00"},
        {"amount": None, "count": 3.0, "flag": False, "city": None, "seen": None},
    ]
    batch = _json(records, MIXED)
    assert np.isnan(batch["amount"][1])
    assert batch["count"].tolist() == [2.0, 3.0]
    assert batch["flag"].dtype == bool
    assert batch["city"].tolist() == ["Kyoto", None]
    assert batch["seen"].dtype == np.dtype("datetime64[us]")
    assert np.isnat(batch["seen"][1])
    csv = b"amount,count,flag,city,seen\n1.5,2,true,Kyoto,2024-05-01T12:00:00\n,3,FALSE,,\n"
    from_csv = parse_invocation(csv, "text/csv", MIXED)
    for name in ("count", "flag", "city"):
        assert from_csv[name].tolist() == batch[name].tolist()


@pytest.mark.parametrize(
    ("record", "code", "column"),
    [
        ({"count": 2.5}, "wrong_type", "count"),
        ({"count": None}, "null_value", "count"),
        ({"flag": 1}, "wrong_type", "flag"),
        ({"city": 5}, "wrong_type", "city"),
        ({"seen": "yesterday"}, "wrong_type", "seen"),
    ],
)
def test_mixed_type_refusals(record: dict[str, object], code: str, column: str) -> None:
    base = {"amount": 1.0, "count": 1, "flag": True, "city": "x", "seen": None}
    err = _refused(orjson.dumps([{**base, **record}]), v=MIXED)
    assert (err.code, err.column) == (code, column)


def test_v2_column_tensors_and_matrix() -> None:
    tensors = [
        {"name": n, "shape": [2], "datatype": "FP64", "data": [v, v]}
        for n, v in zip(FEATURES, ROW, strict=True)
    ]
    batch, request_id, wanted = parse_v2_infer(
        orjson.dumps({"id": "a", "inputs": tensors}), NUMERIC
    )
    assert batch["f03"].tolist() == [3.5, 3.5]
    assert (request_id, wanted) == ("a", None)
    matrix = {
        "inputs": [{"name": "x", "shape": [2, 30], "datatype": "FP64", "data": ROW + ROW}],
        "outputs": [{"name": "probabilities"}],
    }
    batch, _, wanted = parse_v2_infer(orjson.dumps(matrix), NUMERIC)
    assert batch["f29"].tolist() == [29.5, 29.5]
    assert wanted == ["probabilities"]
    with pytest.raises(BadRequest) as caught:
        parse_v2_infer(
            orjson.dumps({"inputs": [{**tensors[0], "data": [1.0]}, *tensors[1:]]}), NUMERIC
        )
    assert caught.value.code == "wrong_shape"
    with pytest.raises(BadRequest) as caught:
        parse_v2_infer(
            orjson.dumps({"inputs": [{**tensors[0], "datatype": "BYTES"}, *tensors[1:]]}), NUMERIC
        )
    assert (caught.value.code, caught.value.column) == ("wrong_type", "f00")
