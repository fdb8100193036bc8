"""Rebuild pose_landmark_lite.onnx and pose_landmark_full.onnx from npm @mediapipe/pose.

Upstream: npm `@mediapipe/pose` 0.5.1675469404 (Apache-2.0), members
`package/pose_landmark_lite.tflite` and `package/pose_landmark_full.tflite` (BlazePose GHUM
landmark models). Converted with tf2onnx `--tflite` (opset 13), names kept as tf2onnx writes
them. Input `input_1` [1,256,256,3] RGB in 0..1; outputs `Identity` [1,195] (39 points x
(x, y, z, visibility logit, presence logit), crop pixels), `Identity_1` [1,1] pose presence,
`Identity_2` segmentation, `Identity_3` heatmaps, `Identity_4` [1,117] world landmarks.
Checked against TFLite's interpreter on the landmark, presence and world-landmark outputs
(the segmentation logits differ by up to 1.1 and are not used; measured landmarks 0.002 px
lite, 0.02 px full).
Measured here (tensorflow 2.19.0, tf2onnx 1.17.0): against TFLite 0.0023 px (lite) / 0.0045 px
(full) on the used outputs; against ../shared/models' files 0 on every output (the files differ
by 98 / 40 bytes of metadata, so their sha256 differs from the manifest's).
Needs `pip install '.[convert]'` (tf2onnx, tensorflow).
Run: python models/convert/pose_landmark.py --out DIR [--variant lite|full|both]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _tflite
import numpy as np
from _common import finish, parse_args, temp_onnx, upstream

TARBALL = "https://registry.npmjs.org/@mediapipe/pose/-/pose-0.5.1675469404.tgz"
TARBALL_SHA256 = "8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84"
MEMBERS = {
    "pose_landmark_lite": (
        "package/pose_landmark_lite.tflite",
        "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
    ),
    "pose_landmark_full": (
        "package/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
}
USED = ("Identity", "Identity_1", "Identity_4")  # landmarks, presence, world landmarks


def reference(tflite: Path, onnx_file: Path) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """TFLite's outputs in the ONNX graph's output order, matched by name; the outputs the
    product does not read (segmentation, heatmaps) are taken from the ONNX file itself, so
    only the used ones are compared."""
    import onnxruntime as ort
    import tensorflow as tf

    interp: Any = tf.lite.Interpreter(model_path=str(tflite))
    interp.allocate_tensors()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = next(iter(feeds.values()))
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        lite = {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
        own = dict(zip(names, sess.run(None, feeds), strict=True))
        return [np.asarray(lite[n]).reshape(own[n].shape) if n in USED else own[n] for n in names]

    return run


def _feeds(rng: np.random.Generator) -> Callable[[], dict[str, np.ndarray]]:
    def feeds() -> dict[str, np.ndarray]:
        return {"input_1": rng.uniform(0, 1, (1, 256, 256, 3)).astype(np.float32)}

    return feeds


def main() -> int:
    """Download the npm tarball, convert each variant, check against TFLite, write."""
    variant = "both"
    if "--variant" in sys.argv:
        i = sys.argv.index("--variant")
        variant = sys.argv[i + 1]
        del sys.argv[i : i + 2]
    args = parse_args("pose_landmark", __doc__)
    status = 0
    for name, (member, member_sha) in MEMBERS.items():
        if variant != "both" and not name.endswith(variant):
            continue
        tflite = upstream(args, TARBALL, member, member_sha, TARBALL_SHA256)
        tmp = temp_onnx(args, name)
        _tflite.convert(tflite, tmp)
        feeds = _feeds(np.random.default_rng(0))

        status |= finish(args, name, tmp, feeds, reference(tflite, tmp), tolerance=0.05)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
