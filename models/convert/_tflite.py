"""TFLite -> ONNX with tf2onnx (pinned in the `convert` extra), shared by three scripts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import require

TF2ONNX = "1.17.0"
TENSORFLOW = "2.19.0"
OPSET = 13


def convert(
    tflite: Path, out: Path, rename: dict[str, str] | None = None, batch: bool = False
) -> None:
    """Convert `tflite` to ONNX at `out` (opset 13), optionally renaming graph inputs/outputs
    and making the first dimension a dynamic batch `N`."""
    require("tf2onnx", TF2ONNX)
    require("tensorflow", TENSORFLOW)
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    g = model.graph
    for old, new in (rename or {}).items():
        for node in g.node:
            node.input[:] = [new if i == old else i for i in node.input]
            node.output[:] = [new if o == old else o for o in node.output]
        for v in [*g.input, *g.output]:
            if v.name == old:
                v.name = new
    if batch:
        for v in [*g.input, *g.output]:
            dims = v.type.tensor_type.shape.dim
            if dims:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "N"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def runner(tflite: Path) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """The original runtime: TensorFlow Lite's interpreter, one sample at a time, outputs in
    the interpreter's order (the order tf2onnx gives the ONNX graph's outputs)."""
    import tensorflow as tf

    interp: Any = tf.lite.Interpreter(model_path=str(tflite))

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ins = interp.get_input_details()
        outs = interp.get_output_details()
        n = next(iter(feeds.values())).shape[0]
        results: list[list[np.ndarray]] = [[] for _ in outs]
        for i in range(n):
            for d, x in zip(ins, feeds.values(), strict=True):
                interp.resize_tensor_input(d["index"], (1, *x.shape[1:]))
            interp.allocate_tensors()
            for d, x in zip(ins, feeds.values(), strict=True):
                interp.set_tensor(d["index"], x[i : i + 1])
            interp.invoke()
            for j, d in enumerate(interp.get_output_details()):
                results[j].append(interp.get_tensor(d["index"]))
        return [np.concatenate(r) for r in results]

    return run
