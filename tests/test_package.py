"""Model packages: built from real training results, loaded back, verified byte by byte."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

import meguri
from meguri import datasets
from meguri.data import fit_transform
from meguri.data._transform_onnx import graph_inputs, transform_to_onnx
from meguri.errors import PackageError, PackageIntegrityError
from meguri.registry._package import build_package, column_array, log_model, signature_of
from meguri.serve._model import LoadedModel
from meguri.serve._package import load_package
from meguri.serve._runtimes import build_model, onnx_features
from meguri.spec import parse_spec
from meguri.store import Workspace
from meguri.testing.specs import quick_spec_text
from meguri.train._train import TrainResult, train

_RATIO = (
    "    - ratio: {name: area_per_perimeter, numerator: mean_area, denominator: mean_perimeter}\n"
)


def _spec(algorithm: str, *, regression: bool = False) -> meguri.ProjectSpec:
    text = quick_spec_text("pkg", algorithms=(algorithm,))
    if regression:
        text = text.replace("task: binary_classification", "task: regression")
        text = text.replace("target: malignant ", "target: mean_area ").replace(_RATIO, "")
        text = text.replace("split: {method: stratified,", "split: {method: random,")
        text = text[: text.index("\nsuccess_criteria:")] + text[text.index("\nrequirements:") :]
        # the monitor's alert rules name the criteria removed above
        text = text[: text.index("\n  alerts:")] + text[text.index("\n  notifiers:") :]
    return parse_spec(text)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = meguri.open_workspace(tmp_path_factory.mktemp("ws"), project="pkg")
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def trained(ws: Workspace) -> dict[str, TrainResult]:
    """One training result per case, trained once for the module."""
    cases = {
        "linear": _spec("linear"),
        "hist_gradient_boosting": _spec("hist_gradient_boosting"),
        "lightgbm": _spec("lightgbm"),
        "ridge": _spec("linear", regression=True),
    }
    return {name: train(spec, workspace=ws) for name, spec in cases.items()}


@pytest.fixture(scope="module")
def packages(
    trained: dict[str, TrainResult], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packages")
    for name, result in trained.items():
        build_package(result, root / name)
    return {name: root / name for name in trained}


def _test_batch(result: TrainResult, model: LoadedModel) -> dict[str, Any]:
    test = result.prepared.raw["test"]
    return {c.name: column_array(test.get_column(c.name), c.type) for c in model.signature.inputs}


def _in_memory(result: TrainResult) -> np.ndarray[Any, Any]:
    transform = result.prepared.transform
    x = transform.apply(result.prepared.raw["test"]).collect()
    return x.select(list(transform.output_schema)).to_numpy()


@pytest.mark.parametrize(
    ("case", "runtime"),
    [("linear", "onnx"), ("hist_gradient_boosting", "onnx"), ("lightgbm", None)],
)
def test_classifier_packages_predict_as_the_model_in_memory(
    case: str, runtime: str | None, trained: dict[str, TrainResult], packages: dict[str, Path]
) -> None:
    result = trained[case]
    model = load_package(packages[case], name=case, version="1")
    if runtime is not None:
        assert model.runtime == runtime
    got = model.predict(_test_batch(result, model))
    x = _in_memory(result)
    assert got.probabilities is not None
    assert np.abs(got.probabilities - result.model.predict_proba(x)).max() < 1e-5
    assert (got.values == result.model.predict(x)).mean() > 0.99  # ties at 0.5 may flip
    assert model.signature.output.labels == (0, 1)
    [check] = [c for c in model.metadata["checks"] if c["passed"] and c["check"] == "exactness"]
    assert check["max_abs_diff"] < 1e-5 and check["rows"] > 0


def test_linear_package_is_one_onnx_pipeline_with_full_metadata(
    trained: dict[str, TrainResult], packages: dict[str, Path]
) -> None:
    folder, result = packages["linear"], trained["linear"]
    document = json.loads((folder / "model.json").read_bytes())
    assert document["format"] == "meguri.model" and document["format_version"] == 1
    assert document["runtime"] == "onnx" and document["estimator"]["file"] == "pipeline.onnx"
    assert set(document["files"]) == {
        "transform.json",
        "pipeline.onnx",
        "baseline/profile.json",
        "baseline/reference.json",
        "baseline/reference_sample.parquet",
    }
    for path, entry in document["files"].items():
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == entry["sha256"]
    lineage = document["lineage"]
    assert lineage["run_id"] == result.run_id
    assert lineage["dataset_versions"] == {p: v.id for p, v in result.prepared.parts.items()}
    assert lineage["transform_digest"] == result.prepared.transform_digest
    assert document["metrics"]["test/roc_auc"] == result.metrics["test/roc_auc"]
    assert document["algorithm"] == "linear" and "python" in document["dependencies"]
    assert document["dependencies"]["scikit-learn"]
    names = [c["name"] for c in document["signature"]["inputs"]]
    assert names == list(result.prepared.transform.input_schema)
    baseline = json.loads((folder / "baseline/profile.json").read_bytes())
    assert baseline["rows"] == result.prepared.raw["train"].height


def test_regression_package_predicts_as_the_model_in_memory(
    trained: dict[str, TrainResult], packages: dict[str, Path]
) -> None:
    result = trained["ridge"]
    model = load_package(packages["ridge"])
    assert model.signature.output.task == "regression"
    got = model.predict(_test_batch(result, model))
    expected = result.model.predict(_in_memory(result))
    assert got.probabilities is None
    assert np.max(np.abs(got.values - expected) / np.maximum(1.0, np.abs(expected))) < 1e-5


def test_one_row_predicts_like_the_batch(
    trained: dict[str, TrainResult], packages: dict[str, Path]
) -> None:
    model = load_package(packages["hist_gradient_boosting"])
    batch = _test_batch(trained["hist_gradient_boosting"], model)
    whole = model.predict(batch)
    for i in (0, 5):
        one = model.predict({k: v[i : i + 1] for k, v in batch.items()})
        assert one.probabilities is not None and whole.probabilities is not None
        assert np.array_equal(one.probabilities[0], whole.probabilities[i])


def test_log_model_records_every_file_as_a_run_artifact(
    trained: dict[str, TrainResult], ws: Workspace
) -> None:
    result = trained["linear"]
    digest = log_model(result, workspace=ws)
    artifacts = {a.name: a for a in ws.metadata.runs.list_artifacts(result.run_id)}
    model_json = ws.artifacts.get_bytes(artifacts["model/model.json"].digest)
    assert hashlib.sha256(model_json).hexdigest() == digest
    for path, entry in json.loads(model_json)["files"].items():
        stored = ws.artifacts.get_bytes(artifacts[f"model/{path}"].digest)
        assert hashlib.sha256(stored).hexdigest() == entry["sha256"]


def test_a_changed_byte_is_refused_naming_the_file(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(packages["linear"], tmp_path / "copy")
    data = bytearray((folder / "pipeline.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "pipeline.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageIntegrityError, match=r"pipeline\.onnx: sha256"):
        load_package(folder)


def test_the_expected_digest_is_checked_first(packages: dict[str, Path]) -> None:
    folder = packages["linear"]
    digest = hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
    assert load_package(folder, expected_digest=f"sha256:{digest}").runtime == "onnx"
    with pytest.raises(PackageIntegrityError, match="expected package digest"):
        load_package(folder, expected_digest="0" * 64)


def _rewrite(folder: Path, **changes: Any) -> None:
    document = json.loads((folder / "model.json").read_bytes())
    document.update(changes)
    (folder / "model.json").write_text(json.dumps(document))


def test_unknown_format_version_is_refused(packages: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(packages["linear"], tmp_path / "copy")
    _rewrite(folder, format_version=2)
    with pytest.raises(PackageError, match="format_version 2"):
        load_package(folder)


def _skops_package(source: Path, dest: Path, model: Any) -> Path:
    import skops.io

    folder = shutil.copytree(source, dest)
    blob = skops.io.dumps(model)
    (folder / "pipeline.onnx").unlink()
    (folder / "estimator.skops").write_bytes(blob)
    files = json.loads((folder / "model.json").read_bytes())["files"]
    del files["pipeline.onnx"]
    files["estimator.skops"] = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    _rewrite(folder, runtime="skops", estimator={"file": "estimator.skops"}, files=files)
    return folder


def test_skops_runtime_loads_allowed_types_only(
    trained: dict[str, TrainResult], packages: dict[str, Path], tmp_path: Path
) -> None:
    from sklearn.preprocessing import FunctionTransformer

    result = trained["linear"]
    folder = _skops_package(packages["linear"], tmp_path / "ok", result.model)
    model = load_package(folder)
    got = model.predict(_test_batch(result, model))
    assert got.probabilities is not None
    assert np.array_equal(got.probabilities, result.model.predict_proba(_in_memory(result)))
    sneaky = FunctionTransformer(func=shutil.rmtree)
    folder = _skops_package(packages["linear"], tmp_path / "bad", sneaky)
    with pytest.raises(PackageError, match=r"outside meguri's allowlist.*rmtree"):
        load_package(folder)


def test_unknown_runtime_is_refused(packages: dict[str, Path]) -> None:
    document = json.loads((packages["linear"] / "model.json").read_bytes())
    document["runtime"] = "pickle"
    with pytest.raises(PackageError, match="unknown runtime 'pickle'"):
        build_model(document, {}, name="m", version="1")


# -- the transform as ONNX --------------------------------------------------------------------


def _frame(rows: int = 400, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.normal(size=rows) * (i + 1) + i for i in range(5)}
    data["k"] = rng.integers(0, 4, size=rows).astype(np.float64)
    frame = pl.DataFrame(data)
    frame = frame.with_columns(
        pl.when(pl.int_range(rows) % (i + 3) == 0).then(None).otherwise(pl.col(c)).alias(c)
        for i, c in enumerate(frame.columns)
    )
    return frame.with_columns(y=pl.Series(rng.integers(0, 2, size=rows)))


_STEPS: dict[str, list[dict[str, Any]]] = {
    "impute_mean_indicator": [
        {"impute": {"columns": ["x0", "x1"], "strategy": "mean", "indicator": True}}
    ],
    "impute_median": [{"impute": {"strategy": "median"}}],
    "impute_constant": [{"impute": {"columns": ["x2"], "strategy": "constant", "value": -7}}],
    "clip_iqr": [{"clip": {"method": "iqr", "factor": 1.0}}],
    "clip_quantile": [{"clip": {"columns": ["x3"], "method": "quantile", "lower": 0.1}}],
    "scale_standard": [{"scale": {"method": "standard"}}],
    "scale_minmax": [{"scale": {"columns": ["x1", "k"], "method": "minmax"}}],
    "scale_robust": [{"scale": {"method": "robust"}}],
    "ratio": [{"ratio": {"name": "r", "numerator": "x0", "denominator": "k"}}],
    "bin": [{"bin": {"columns": ["x4", "x0"], "bins": 4, "method": "uniform"}}],
    "drop": [{"drop": {"columns": ["x1"]}}],
    "select": [{"impute": {}}, {"select": {"method": "correlation", "threshold": 0.1}}],
    "rows_only": [{"drop_missing": {"columns": ["x0"]}}, {"zscore_filter": {"threshold": 2}}],
    "chain": [
        {"impute": {"strategy": "median", "indicator": True}},
        {"clip": {"method": "iqr", "factor": 3.0}},
        {"ratio": {"name": "r", "numerator": "x2", "denominator": "x3"}},
        {"scale": {"method": "standard"}},
        {"select": {"method": "variance", "threshold": 0.0}},
    ],
}


@pytest.mark.parametrize("case", list(_STEPS))
def test_transform_onnx_matches_polars_exactly(case: str) -> None:
    frame = _frame()
    fitted, _ = fit_transform(frame, _STEPS[case], target="y")
    graph = transform_to_onnx(fitted)
    assert graph is not None
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    unseen = _frame(seed=11).drop("y")  # other rows, NaN for null
    matrix = unseen.select(pl.all().cast(pl.Float64)).to_numpy()
    (got,) = session.run(None, {"input": matrix})
    expected = fitted.apply(unseen).collect().select(pl.all().cast(pl.Float64)).to_numpy()
    assert got.shape == expected.shape
    assert np.array_equal(got, expected, equal_nan=True)


@pytest.mark.parametrize(
    "steps",
    [
        [{"expression": {"name": "z", "expr": "x0 + x1"}}],
        [{"text_length": {"columns": ["city"]}}],
        [{"one_hot": {"columns": ["city"], "drop_original": False}}],
    ],
)
def test_transform_onnx_is_none_when_a_step_does_not_convert(steps: list[dict[str, Any]]) -> None:
    frame = _frame().with_columns(city=pl.Series(["a", "b"] * 200))
    fitted, _ = fit_transform(frame, steps, target="y")
    assert transform_to_onnx(fitted) is None


# -- text columns (UCI Adult) -----------------------------------------------------------------

_TEXT = [
    *("workclass", "education", "marital_status", "occupation", "relationship", "race", "sex"),
    "native_country",
]
_TEXT_STEPS: dict[str, list[dict[str, Any]]] = {
    "ordinal": [{"ordinal": {"columns": _TEXT}}],
    "one_hot_rare": [{"one_hot": {"columns": _TEXT, "max_categories": 5}}],
    "one_hot_other": [{"one_hot": {"columns": _TEXT, "unseen": "other"}}],
    "mode_indicator": [
        {"impute": {"columns": ["workclass", "sex"], "strategy": "mode", "indicator": True}},
        {"one_hot": {"columns": _TEXT}},
        {"impute": {"columns": ["age"], "strategy": "median"}},
        {"scale": {"method": "standard"}},
    ],
    "constant": [
        {"impute": {"columns": ["workclass", "race"], "strategy": "constant", "value": ""}},
        {"ordinal": {"columns": _TEXT, "unseen": -1}},
        {"drop": {"columns": ["native_country"]}},
    ],
    "target_encode": [{"target_encode": {"columns": _TEXT}}, {"drop": {"columns": ["education"]}}],
}


@pytest.fixture(scope="module")
def adult() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Adult's own train part, and its test part with unseen categories, "" and nulls."""
    frame = pl.read_parquet(datasets.path("adult"))
    train = frame.filter(pl.col("source_split") == "train").drop("source_split")
    test = frame.filter(pl.col("source_split") == "test").drop("source_split")
    row = pl.int_range(pl.len())
    test = test.with_columns(
        pl.when(row % 7 == 0).then(pl.lit("Mars")).otherwise("workclass").alias("workclass"),
        pl.when(row % 11 == 0).then(None).otherwise("sex").alias("sex"),
        pl.when(row % 13 == 0).then(pl.lit("")).otherwise("race").alias("race"),
        pl.when(row % 5 == 0).then(None).otherwise("age").alias("age"),
    )
    return train, test


@pytest.mark.parametrize("case", list(_TEXT_STEPS))
def test_text_steps_as_onnx_give_polars_features_bit_for_bit(
    case: str, adult: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    train, test = adult
    fitted, _ = fit_transform(train, _TEXT_STEPS[case], target="income_over_50k", seed=1)
    graph, inputs = transform_to_onnx(fitted), graph_inputs(fitted)
    assert graph is not None and inputs is not None
    signature = signature_of(None, fitted)
    entry = {"file": "t.onnx", "input": "input", "inputs": inputs.to_dict(), "output": "features"}
    features = onnx_features(graph.SerializeToString(), entry, signature)
    batch = {c.name: column_array(test.get_column(c.name), c.type) for c in signature.inputs}
    expected = fitted.apply(test).collect().select(list(fitted.output_schema)).to_numpy()
    assert test.get_column("sex").null_count() and (test.get_column("workclass") == "Mars").any()
    assert np.array_equal(features(batch), expected.astype(np.float64), equal_nan=True)
    one = {k: v[7:8] for k, v in batch.items()}  # an unseen workclass, one row
    assert np.array_equal(features(one), expected[7:8].astype(np.float64), equal_nan=True)


def _adult_spec() -> meguri.ProjectSpec:
    text = (Path(__file__).parents[1] / "examples/adult/meguri.yaml").read_text()
    text = text.replace("cv_folds: 5", "cv_folds: 2").replace("threshold: 0.92", "threshold: 0.5")
    text = text.replace("[linear, hist_gradient_boosting, lightgbm]", "[linear]")
    text = text.replace(
        "    - ordinal:\n", "    - impute: {columns: [workclass], strategy: mode}\n    - one_hot:\n"
    )
    return parse_spec(text)


def test_adult_text_columns_get_one_onnx_pipeline(ws: Workspace, tmp_path: Path) -> None:
    result = train(_adult_spec(), workspace=ws)
    document = build_package(result, tmp_path / "adult")
    assert document["runtime"] == "onnx" and document["estimator"]["file"] == "pipeline.onnx"
    inputs = document["estimator"]["inputs"]
    assert inputs["text"]["sex"] == "text:sex" and inputs["nulls"] == "nulls"
    assert "age" in inputs["numeric"]
    [check] = [c for c in document["checks"] if c["check"] == "transform_exactness"]
    assert check["identical"] and check["rows"] > 1000
    model = load_package(tmp_path / "adult")
    test = result.prepared.raw["test"].head(50)
    test = test.with_columns(
        pl.when(pl.int_range(50) % 3 == 0).then(None).otherwise("sex").alias("sex"),
        pl.when(pl.int_range(50) % 4 == 0).then(pl.lit("Mars")).otherwise("race").alias("race"),
    )
    batch = {c.name: column_array(test.get_column(c.name), c.type) for c in model.signature.inputs}
    got = model.predict(batch)
    x = result.prepared.transform.apply(test).collect()
    x = x.select(list(result.prepared.transform.output_schema)).to_numpy()
    assert got.probabilities is not None
    assert np.abs(got.probabilities - result.model.predict_proba(x)).max() < 1e-5


def test_knn_package_serves_its_transform_through_onnx(ws: Workspace, tmp_path: Path) -> None:
    result = train(_spec("knn"), workspace=ws)
    document = build_package(result, tmp_path / "knn")
    assert document["runtime"] == "skops"
    assert document["estimator"]["transform"]["file"] == "transform.onnx"
    assert "transform.onnx" in document["files"]
    model = load_package(tmp_path / "knn")
    got = model.predict(_test_batch(result, model))
    assert got.probabilities is not None
    assert np.array_equal(got.probabilities, result.model.predict_proba(_in_memory(result)))
