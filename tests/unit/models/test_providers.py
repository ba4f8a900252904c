"""Execution providers are a setting: the available asked-for ones serve, else the CPU.

A real classifier trained here (fixed seed) and exported with skl2onnx; the
providers asked for are ones this onnxruntime build does not have (CUDA on a CPU
wheel, a misspelt name), so every test runs on any machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from models.bundle import BundleMeta, save_bundle
from models.profile import build_profile
from models.runtime import OnnxModel
from schemas.settings import ModelSettings, ProcessorSettings, Settings
from streams.scoring.model_watcher import model_source

FEATURES = ["f0", "f1", "f2"]
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
MISSPELT = "CPUExecutonProvider"


@pytest.fixture(scope="module")
def trained() -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    estimator = LogisticRegression().fit(X, y)
    onx = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, 3]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString()), X


@pytest.fixture
def no_cuda() -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be shown here")


def runtime_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "models.runtime" and r.levelno == level]


def test_the_default_is_the_cpu_without_a_warning(
    trained: tuple[bytes, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    onnx_bytes, _ = trained
    with caplog.at_level(logging.INFO, logger="models.runtime"):
        model = OnnxModel(onnx_bytes, FEATURES, name="m", version="1")
    assert model.provider == CPU
    assert model.providers == [CPU]
    assert runtime_records(caplog, logging.WARNING) == []
    (info,) = runtime_records(caplog, logging.INFO)
    assert info.getMessage() == "m v1 served by CPUExecutionProvider"
    assert ProcessorSettings().ort_providers == [CPU]


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("asked", [[CUDA], [CUDA, MISSPELT]], ids=["cuda", "cuda+misspelt"])
def test_a_missing_provider_falls_back_to_the_cpu_with_one_warning(
    trained: tuple[bytes, np.ndarray], caplog: pytest.LogCaptureFixture, asked: list[str]
) -> None:
    onnx_bytes, X = trained
    with caplog.at_level(logging.INFO, logger="models.runtime"):
        model = OnnxModel(onnx_bytes, FEATURES, name="m", version="2", providers=asked)
    assert model.provider == CPU
    (warning,) = runtime_records(caplog, logging.WARNING)
    message = warning.getMessage()
    assert f"execution provider(s) {', '.join(asked)} not available" in message
    assert f"(this onnxruntime has {', '.join(ort.get_available_providers())})" in message
    assert message.endswith("served by CPUExecutionProvider")
    (info,) = runtime_records(caplog, logging.INFO)
    assert info.getMessage() == "m v2 served by CPUExecutionProvider"
    # and it serves: the same scores as the default session
    reference = OnnxModel(onnx_bytes, FEATURES, name="m", version="2").predict(X)
    scores = model.predict(X)
    np.testing.assert_array_equal(scores.score, reference.score)
    assert scores.labels is not None and reference.labels is not None
    assert scores.labels.tolist() == reference.labels.tolist()


@pytest.mark.usefixtures("no_cuda")
def test_only_the_missing_provider_is_named_when_an_asked_one_serves(
    trained: tuple[bytes, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    onnx_bytes, _ = trained
    with caplog.at_level(logging.INFO, logger="models.runtime"):
        model = OnnxModel(onnx_bytes, FEATURES, name="m", version="3", providers=[CUDA, CPU])
    assert model.provider == CPU
    (warning,) = runtime_records(caplog, logging.WARNING)
    assert "execution provider(s) CUDAExecutionProvider not available" in warning.getMessage()


@pytest.mark.usefixtures("no_cuda")
def test_the_setting_reaches_the_session_through_the_model_source(
    trained: tuple[bytes, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    onnx_bytes, X = trained
    meta = BundleMeta(
        name="m",
        version="4",
        task="classification",
        feature_names=FEATURES,
        classes=["0", "1"],
        profile=build_profile(X.astype(np.float64), FEATURES),
    )
    save_bundle(tmp_path / "champion", onnx_bytes, meta)
    settings = Settings(
        home=tmp_path,
        models=ModelSettings(dir=tmp_path),
        processor=ProcessorSettings(ort_providers=[CUDA]),
    )
    with caplog.at_level(logging.WARNING, logger="models.runtime"):
        champion = model_source(settings).load("champion")
    assert champion.model.provider == CPU
    (warning,) = runtime_records(caplog, logging.WARNING)
    assert "m v4: execution provider(s) CUDAExecutionProvider not available" in (
        warning.getMessage()
    )


def test_no_provider_at_all_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="at least 1 item"):
        ProcessorSettings(ort_providers=[])
