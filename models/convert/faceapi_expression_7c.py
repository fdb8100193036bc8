"""Rebuild faceapi_expression_7c.onnx from the npm package @vladmandic/face-api 1.7.15.

Upstream ships the face-api.js expression net as quantised TF.js weights
(`model/face_expression_model.bin` + its weights manifest). This script dequantises them
(value = q * scale + min, as tfjs-core does) and writes the network as an ONNX graph with
`onnx.helper`, following face-api.js's own source (FaceFeatureExtractor + FaceProcessor):

    x = (rgb - [122.782, 117.001, 104.298]) / 255            # NCHW, RGB 0..255 in
    four dense blocks (first conv regular, the rest depthwise-separable, TF 'same' padding,
    stride 2 at each block's first conv, dense connections with ReLU), 112 -> 7 pixels
    7x7 average pool (stride 2, valid) -> 256 -> fully connected 256 -> 7 -> softmax

Labels: neutral, happy, sad, angry, fearful, disgusted, surprised. Needs only numpy and onnx
(no TF.js runtime); the original runtime is not available in Python, so the check is against
--reference (the manifest's file). Run: python models/convert/faceapi_expression_7c.py --out DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from _common import finish, parse_args, require, temp_onnx, upstream
from onnx import TensorProto, helper, numpy_helper

NAME = "faceapi_expression_7c"
TARBALL = "https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz"
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
WEIGHTS = (
    "package/model/face_expression_model.bin",
    "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
)
INDEX = (
    "package/model/face_expression_model-weights_manifest.json",
    "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
)
MEAN_RGB = (122.782, 117.001, 104.298)
OPSET = 17


def load_weights(index: Path, blob: Path) -> dict[str, np.ndarray]:
    """Dequantise the TF.js weights into float32 arrays by name."""
    spec = json.loads(index.read_text())[0]["weights"]
    data = blob.read_bytes()
    out: dict[str, np.ndarray] = {}
    pos = 0
    for w in spec:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            raw = np.frombuffer(data, np.uint8, n, pos).astype(np.float32)
            arr = raw * np.float32(q["scale"]) + np.float32(q["min"])
            pos += n
        else:
            arr = np.frombuffer(data, np.float32, n, pos).copy()
            pos += 4 * n
        out[w["name"]] = arr.reshape(w["shape"]).astype(np.float32)
    if pos != len(data):
        sys.exit(f"error: weights file has {len(data)} bytes, the manifest describes {pos}")
    return out


class Graph:
    """A tiny ONNX graph builder."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def op(self, op: str, inputs: list[str], **attrs: Any) -> str:
        self.n += 1
        out = f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(
        self, x: str, w: np.ndarray, b: np.ndarray | None, stride: int, group: int, name: str
    ) -> str:
        """A TF 'same' convolution on even sizes: stride 2 pads only bottom/right."""
        k = w.shape[2]
        pads = [k // 2] * 4 if stride == 1 else [0, 0, 1, 1]
        ins = [x, self.const(f"{name}/w", w)]
        if b is not None:
            ins.append(self.const(f"{name}/b", b))
        return self.op("Conv", ins, strides=[stride, stride], pads=pads, group=group)


def separable(g: Graph, x: str, w: dict[str, np.ndarray], p: str, stride: int) -> str:
    """tf.separableConv2d(x, depthwise, pointwise, stride, 'same') + bias."""
    dw = w[f"{p}/depthwise_filter"]  # [3, 3, C, 1]
    pw = w[f"{p}/pointwise_filter"]  # [1, 1, C, O]
    c = dw.shape[2]
    y = g.conv(x, dw.transpose(2, 3, 0, 1), None, stride, c, f"{p}/dw")
    return g.conv(y, pw.transpose(3, 2, 0, 1), w[f"{p}/bias"], 1, 1, f"{p}/pw")


def dense_block(g: Graph, x: str, w: dict[str, np.ndarray], p: str, first: bool) -> str:
    """face-api.js denseBlock4 (scale down by 2)."""
    if first:
        f = w[f"{p}/conv0/filters"].transpose(3, 2, 0, 1)
        out1 = g.op("Relu", [g.conv(x, f, w[f"{p}/conv0/bias"], 2, 1, f"{p}/conv0")])
    else:
        out1 = g.op("Relu", [separable(g, x, w, f"{p}/conv0", 2)])
    out2 = separable(g, out1, w, f"{p}/conv1", 1)
    in3 = g.op("Relu", [g.op("Add", [out1, out2])])
    out3 = separable(g, in3, w, f"{p}/conv2", 1)
    in4 = g.op("Relu", [g.op("Add", [out1, g.op("Add", [out2, out3])])])
    out4 = separable(g, in4, w, f"{p}/conv3", 1)
    return g.op("Relu", [g.op("Add", [out1, g.op("Add", [out2, g.op("Add", [out3, out4])])])])


def build(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The expression net as an ONNX model: input [N,3,112,112] RGB 0..255, output probs [N,7]."""
    g = Graph()
    mean = g.const("mean_rgb", np.array(MEAN_RGB, np.float32).reshape(1, 3, 1, 1))
    x = g.op("Div", [g.op("Sub", ["input", mean]), g.const("c255", np.array(255.0, np.float32))])
    for i in range(4):
        x = dense_block(g, x, w, f"dense{i}", first=i == 0)
    x = g.op("AveragePool", [x], kernel_shape=[7, 7], strides=[2, 2])
    x = g.op("Flatten", [x], axis=1)
    fc_w, fc_b = g.const("fc/w", w["fc/weights"]), g.const("fc/b", w["fc/bias"])
    logits = g.op("Gemm", [x, fc_w, fc_b])
    g.nodes.append(helper.make_node("Softmax", [logits], ["probs"], axis=1))
    graph = helper.make_graph(
        g.nodes,
        "faceapi_expression_7c",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="emotion-stream"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> int:
    """Download, dequantise, build, check, write."""
    args = parse_args(NAME, __doc__)
    require("onnx", onnx.__version__)  # any onnx works: the graph is written by hand
    index = upstream(args, TARBALL, INDEX[0], INDEX[1], TARBALL_SHA256)
    blob = upstream(args, TARBALL, WEIGHTS[0], WEIGHTS[1], TARBALL_SHA256)
    weights = load_weights(index, blob)
    tmp = temp_onnx(args, NAME)
    onnx.save(build(weights), str(tmp))
    rng = np.random.default_rng(0)

    def feeds() -> dict[str, np.ndarray]:
        return {"input": rng.uniform(0, 255, (4, 3, 112, 112)).astype(np.float32)}

    return finish(args, NAME, tmp, feeds, None)


if __name__ == "__main__":
    raise SystemExit(main())
