"""Rebuild mp_face_blendshapes.onnx from MediaPipe's Face Landmarker bundle.

Upstream: Google's `face_landmarker.task` (float16/1, Apache-2.0 per the model card), the
manifest entry `face_landmarker_task`: a zip whose member `face_blendshapes.tflite` is
converted with tf2onnx `--tflite` (opset 13), names kept as tf2onnx writes them.
Input [1,146,2] image-pixel x, y of 146 of the 478 landmarks; output [52] blendshape scores.
The bundle is read from --out when present and verified, else downloaded from Google.
Needs `pip install '.[convert]'` (tf2onnx, tensorflow). Checked against TFLite's interpreter.
Run: python models/convert/mp_face_blendshapes.py --out DIR
"""

from __future__ import annotations

import _tflite
import numpy as np
from _common import finish, parse_args, temp_onnx, upstream

from stream.models.registry import Manifest

NAME = "mp_face_blendshapes"
MEMBER = "face_blendshapes.tflite"
MEMBER_SHA256 = "4f36dded049db18d76048567439b2a7f58f1daabc00d78bfe8f3ad396a2d2082"


def main() -> int:
    """Take the member out of the bundle, convert, check against TFLite, write."""
    args = parse_args(NAME, __doc__)
    bundle = Manifest.load()["face_landmarker_task"]
    local = args.out / bundle.file
    url = local.resolve().as_uri() if local.is_file() else bundle.url
    tflite = upstream(args, url, MEMBER, MEMBER_SHA256, bundle.sha256)
    tmp = temp_onnx(args, NAME)
    _tflite.convert(tflite, tmp)
    rng = np.random.default_rng(0)

    def feeds() -> dict[str, np.ndarray]:
        return {
            "serving_default_input_points:0": rng.uniform(0, 640, (1, 146, 2)).astype(np.float32)
        }

    return finish(args, NAME, tmp, feeds, _tflite.runner(tflite), tolerance=1e-4)


if __name__ == "__main__":
    raise SystemExit(main())
