"""Load-time graph rewrites (stream/models/graph.py): same outputs, fewer slow operators."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest

from stream.core.protobuf import fields
from stream.models.graph import _Graph, fold_pads, rewrite_prelu
from tests.conftest import MODELS


def _session(source: bytes | str) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(source, sess_options=o, providers=["CPUExecutionProvider"])


def _ops(model: bytes) -> dict[str, int]:
    graph = next(f[2] for f in fields(model) if f[0] == 7)
    assert isinstance(graph, memoryview)
    counts: dict[str, int] = {}
    for n in _Graph.parse(graph).nodes.values():
        counts[n.op] = counts.get(n.op, 0) + 1
    return counts


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "shape", "count"),
    [
        ("mp_face_landmarks_detector", (1, 256, 256, 3), 69),  # PRelu
        ("mobilefacenet_sirius_192d", (3, 112, 112, 3), 33),  # Relu + (x - Abs x) * c
    ],
)
def test_prelu_rewrite_keeps_outputs(name: str, shape: tuple[int, ...], count: int) -> None:
    data = (MODELS / f"{name}.onnx").read_bytes()
    fast, n = rewrite_prelu(data)
    assert n == count
    before, after = _ops(data), _ops(fast)
    assert after.get("PRelu", 0) == 0 and after.get("Abs", 0) == 0
    assert after["Conv"] == before["Conv"]
    a, b = _session(str(MODELS / f"{name}.onnx")), _session(fast)
    rng = np.random.default_rng(0)
    # Smooth images (negative and positive activations everywhere), in the model's range.
    x = rng.random(shape, dtype=np.float32)
    x = ((x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)) / 3).astype(np.float32)
    if name.startswith("mobilefacenet"):
        x *= 255.0
    feed = {a.get_inputs()[0].name: x}
    for p, q in zip(a.run(None, feed), b.run(None, feed), strict=True):
        scale = max(float(np.abs(p).max()), 1e-6)
        err = float(np.abs(p - q).max())
        print(f"{name}: output scale {scale:.3g}, max abs difference {err:.3g}")
        assert err <= 1e-4 * scale + 1e-6

    def cpu_ms(s: ort.InferenceSession) -> float:
        s.run(None, feed)
        c0 = time.process_time()
        for _ in range(5):
            s.run(None, feed)
        return (time.process_time() - c0) / 5 * 1e3

    print(f"{name}: CPU per call {cpu_ms(a):.1f} ms as converted, {cpu_ms(b):.1f} ms rewritten")


def test_models_without_prelu_are_left_alone() -> None:
    data = (MODELS / "yunet_n_dynamic.onnx").read_bytes()
    assert rewrite_prelu(data) == (data, 0)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "count"), [("faceapi_expression_7c", 16), ("crepe_tiny_pitch", 6)]
)
def test_computed_pads_fold_into_their_convs(name: str, count: int) -> None:
    data = (MODELS / f"{name}.onnx").read_bytes()
    fast, n = fold_pads(data)
    assert n == count
    before, after = _ops(data), _ops(fast)
    assert before["Pad"] - after.get("Pad", 0) == count
    assert after["Conv"] == before["Conv"]
    # The pads' arithmetic is gone with them.
    assert sum(after.values()) < sum(before.values()) - count
    a, b = _session(str(MODELS / f"{name}.onnx")), _session(fast)
    rng = np.random.default_rng(1)
    inp = a.get_inputs()[0]
    for batch in (1, 5):  # the amounts depend on the fixed input size, not on the batch
        shape = [batch, *inp.shape[1:]]
        x = rng.random(shape, dtype=np.float32) * (255.0 if name.startswith("faceapi") else 1.0)
        feed = {inp.name: x}
        for p, q in zip(a.run(None, feed), b.run(None, feed), strict=True):
            err = float(np.abs(p - q).max())
            print(f"{name} batch {batch}: max abs difference {err:.3g}")
            assert err <= 1e-5 * max(float(np.abs(p).max()), 1.0)


def test_pads_of_models_without_a_fixed_input_stay() -> None:
    data = (MODELS / "silero_vad_v6.onnx").read_bytes()
    assert fold_pads(data) == (data, 0)
