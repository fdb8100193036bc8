"""Rebuild mp_face_landmarks_detector.onnx from MediaPipe's Face Landmarker bundle.

Upstream: Google's `face_landmarker.task` (float16/1, Apache-2.0 per the model card), the
manifest entry `face_landmarker_task`: a zip whose member `face_landmarks_detector.tflite` is
converted with tf2onnx `--tflite` (opset 13), names kept as tf2onnx writes them.
Input `input_12` [N,256,256,3] RGB / 255; outputs `Identity` (478 x, y, z in crop pixels),
`Identity_1` (face presence logit), `Identity_2`. Tolerance 1e-2 px against TFLite (the
float16 weights make TFLite and ONNX Runtime round differently; measured 6.4e-4 px).
The bundle is read from --out when present and verified, else downloaded from Google.
Needs `pip install '.[convert]'` (tf2onnx, tensorflow). Checked against TFLite's interpreter.
Run: python models/convert/mp_face_landmarks_detector.py --out DIR
"""

from __future__ import annotations

import _tflite
import numpy as np
from _common import finish, parse_args, temp_onnx, upstream

from stream.models.registry import Manifest

NAME = "mp_face_landmarks_detector"
MEMBER = "face_landmarks_detector.tflite"
MEMBER_SHA256 = "c7d54204ce0448474c7f3fa9af494787c0965cbdd6f20fc72867e43046bd43d5"


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
        return {"input_12": rng.uniform(0, 1, (2, 256, 256, 3)).astype(np.float32)}

    return finish(args, NAME, tmp, feeds, _tflite.runner(tflite), tolerance=1e-2)


if __name__ == "__main__":
    raise SystemExit(main())
