"""Dynamic batching across streams: same results as one call each, fewer model runs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.models.runtime import make_factory
from stream.models.scheduler import BatchingSession

from .conftest import MODELS, imread


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.integration
def test_concurrent_calls_are_merged_and_split_back() -> None:
    raw = _session("faceapi_expression_7c")
    batching = BatchingSession(raw, max_batch=64, max_wait_s=0.05, name="emotion")
    rng = np.random.default_rng(0)
    inputs = [rng.random((n, 3, 112, 112), dtype=np.float32) for n in (1, 3, 2, 4, 1, 5)]
    expected = [raw.run(None, {"input": x})[0] for x in inputs]
    barrier = threading.Barrier(len(inputs))

    def call(x: np.ndarray) -> np.ndarray:
        barrier.wait()  # all streams call at once
        out: np.ndarray = batching.run(None, {"input": x})[0]
        return out

    with ThreadPoolExecutor(len(inputs)) as pool:
        got = list(pool.map(call, inputs))
    batching.close()
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    st = batching.stats
    print(f"scheduler: {st.calls} calls in {st.batches} batches, largest {st.max_rows} rows")
    assert st.calls == 6 and st.batches < 6 and st.rows == 16


@pytest.mark.integration
def test_shapes_that_differ_run_in_separate_batches() -> None:
    raw = _session("yunet_n_dynamic")
    batching = BatchingSession(raw, max_wait_s=0.05)
    a = np.zeros((1, 3, 64, 96), np.float32)
    b = np.ones((1, 3, 96, 64), np.float32)
    with ThreadPoolExecutor(2) as pool:
        fa, fb = (
            pool.submit(batching.run, None, {"input": a}),
            pool.submit(batching.run, None, {"input": b}),
        )
        ra, rb = fa.result(), fb.result()
    for got, x in ((ra, a), (rb, b)):
        for g, e in zip(got, raw.run(None, {"input": x}), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    batching.close()


@pytest.mark.integration
def test_errors_reach_every_caller_and_fixed_batch_models_are_not_wrapped() -> None:
    batching = BatchingSession(_session("faceapi_expression_7c"), max_wait_s=0.0)
    with pytest.raises(Exception, match=r"(?i)dimension|shape|invalid"):
        batching.run(None, {"input": np.zeros((2, 3, 5, 5), np.float32)})
    batching.close()
    assert not BatchingSession.batchable(_session("yunet_n_320x320"))
    assert BatchingSession.batchable(_session("mobilefacenet_sirius_192d"))


@pytest.mark.integration
def test_pipeline_results_equal_with_and_without_batching(config: Config, media: Path) -> None:
    frame = VideoFrame(imread(media / "identities" / "face_recognition" / "two_people.jpg"), 0.0)
    results = {}
    for mode in ("off", "on"):
        cfg = config.replace("runtime", batching=mode)
        factory = make_factory(cfg)
        assert isinstance(factory.get("faceapi_expression_7c"), BatchingSession) == (mode == "on")
        stages = Stages(cfg, factory, voice=False)
        pipe = stages.vision(cfg.replace("tracking", min_hits=1, tentative_max_s=0.0))
        r = pipe.process(frame)
        results[mode] = (r.detections.boxes, np.array([f.raw_probs for f in r.faces]))
    np.testing.assert_allclose(results["on"][0], results["off"][0], atol=1e-3)
    np.testing.assert_allclose(results["on"][1], results["off"][1], atol=1e-4)
    assert len(results["on"][1]) == 2
