"""Load-time graph rewrites that make converted models faster on ONNX Runtime's CPU provider
without changing what they compute.

Converted TFLite/TF models express PReLU either as `PRelu` with a per-channel slope or as
`Relu(x) + (x - Abs(x)) * c` (slope 2c). ONNX Runtime runs `PRelu` with a generic broadcast
kernel, and neither form fits its blocked (NCHWc) convolution layout, so every activation
costs a slow pass plus layout reorders. Both are rewritten as `Relu(x) * (1 - s) + x * s`:
the same function (to float rounding), made of operators the layout transformer keeps
blocked. Measured on this machine, one thread, CPU time per call: mp_face_landmarks_detector
(69 PReLUs) 12.9 -> 6.2 ms, mobilefacenet_sirius_192d (33) 8.1 -> 5.7 ms a face.

Models converted from TensorFlow.js pad "SAME" convolutions with a separate `Pad` whose amounts
are computed from the input's shape at run time (faceapi_expression_7c: 16 of them). Where the
input has a fixed size, the amounts are evaluated once at load and folded into the following
`Conv`'s own `pads` (the shape arithmetic left unused is dropped): the same convolution, without
a copy of every padded activation and its layout reorders.

The rewrites work on the protobuf bytes directly (the `onnx` package would add ~40 MB to peak
memory); unknown fields are copied unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.protobuf import Field, fields, varint

# ONNX protobuf field numbers (onnx/onnx.proto3).
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP, _NODE_ATTR = 1, 2, 3, 4, 5
_ATTR_NAME, _ATTR_S, _ATTR_INTS, _ATTR_TYPE = 1, 4, 8, 20
_ATTR_INTS_TYPE = 7
_VALUE_TYPE, _TYPE_TENSOR, _TENSOR_ELEM, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_VALUE = 2, 1, 1, 2, 1, 1
_INT64 = 7
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_FLOATS, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 8, 9
_VALUE_NAME = 1
_FLOAT = 1


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def _node(op: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    body = b"".join(_len_field(_NODE_INPUT, s.encode()) for s in inputs)
    body += b"".join(_len_field(_NODE_OUTPUT, s.encode()) for s in outputs)
    body += _len_field(_NODE_NAME, name.encode()) + _len_field(_NODE_OP, op.encode())
    return _len_field(_GRAPH_NODE, body)


def _tensor(name: str, value: np.ndarray) -> bytes:
    v = np.ascontiguousarray(value, dtype="<f4")
    body = b"".join(_enc_varint(_TENSOR_DIMS << 3) + _enc_varint(int(d)) for d in v.shape)
    body += _enc_varint(_TENSOR_TYPE << 3) + _enc_varint(_FLOAT)
    body += _len_field(_TENSOR_NAME, name.encode()) + _len_field(_TENSOR_RAW, v.tobytes())
    return _len_field(_GRAPH_INIT, body)


@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class _Graph:
    fields: list[Field]
    nodes: dict[int, _Node] = field(default_factory=dict)  # field index -> node
    inits: dict[str, memoryview] = field(default_factory=dict)  # name -> TensorProto
    outputs: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, b: bytes | memoryview) -> _Graph:
        g = cls(fields(b))
        for k, (num, _wt, val, _raw) in enumerate(g.fields):
            if not isinstance(val, memoryview):
                continue
            if num == _GRAPH_NODE:
                ins: list[str] = []
                outs: list[str] = []
                op = ""
                for n, _w, v, _r in fields(val):
                    if isinstance(v, memoryview):
                        if n == _NODE_INPUT:
                            ins.append(bytes(v).decode())
                        elif n == _NODE_OUTPUT:
                            outs.append(bytes(v).decode())
                        elif n == _NODE_OP:
                            op = bytes(v).decode()
                g.nodes[k] = _Node(op, ins, outs)
            elif num == _GRAPH_INIT:
                for n, _w, v, _r in fields(val):
                    if n == _TENSOR_NAME and isinstance(v, memoryview):
                        g.inits[bytes(v).decode()] = val
            elif num == _GRAPH_OUTPUT:
                for n, _w, v, _r in fields(val):
                    if n == _VALUE_NAME and isinstance(v, memoryview):
                        g.outputs.add(bytes(v).decode())
        return g

    def const(self, name: str) -> np.ndarray | None:
        """A float initializer's value (None: not a float constant)."""
        b = self.inits.get(name)
        if b is None:
            return None
        dims: list[int] = []
        dtype, raw, floats = 0, b"", b""
        raw_view: memoryview | None = None
        for n, wt, v, _r in fields(b):
            if n == _TENSOR_DIMS:
                if wt == 0 and isinstance(v, int):
                    dims.append(v)
                elif isinstance(v, memoryview):  # packed
                    i = 0
                    while i < len(v):
                        d, i = varint(v, i)
                        dims.append(d)
            elif n == _TENSOR_TYPE and isinstance(v, int):
                dtype = v
            elif n == _TENSOR_RAW and isinstance(v, memoryview):
                raw_view = v
            elif n == _TENSOR_FLOATS and isinstance(v, memoryview):
                floats += v  # packed, or one float per field
        if dtype != _FLOAT:
            return None
        data = bytes(raw_view) if raw_view is not None else raw or floats
        count = int(np.prod(dims)) if dims else 1
        if len(data) != 4 * count:
            return None
        return np.asarray(struct.unpack(f"<{count}f", data), np.float32).reshape(dims)


def rewrite_prelu(model: bytes) -> tuple[bytes, int]:
    """(the serialised ONNX model with its PReLUs rewritten, how many were rewritten)."""
    top = fields(model)
    at = [k for k, f in enumerate(top) if f[0] == _MODEL_GRAPH and isinstance(f[2], memoryview)]
    if len(at) != 1:
        return model, 0
    graph_bytes = top[at[0]][2]
    assert isinstance(graph_bytes, memoryview)
    g = _Graph.parse(graph_bytes)
    consumers: dict[str, list[int]] = {}
    for k, n in g.nodes.items():
        for i in n.inputs:
            consumers.setdefault(i, []).append(k)

    def only_user(name: str) -> int | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in g.outputs else None

    replace: dict[int, bytes] = {}  # node field index -> the nodes in its place ("": dropped)
    new_inits: list[bytes] = []

    def emit(k: int, x: str, slope: np.ndarray, y: str) -> None:
        p = f"fast_prelu_{len(new_inits) // 2}"
        new_inits.extend([_tensor(p + "_keep", 1.0 - slope), _tensor(p + "_slope", slope)])
        replace[k] = (
            _node("Relu", [x], [p + "_relu"], p + "/relu")
            + _node("Mul", [p + "_relu", p + "_keep"], [p + "_pos"], p + "/pos")
            + _node("Mul", [x, p + "_slope"], [p + "_lin"], p + "/lin")
            + _node("Add", [p + "_pos", p + "_lin"], [y], p + "/add")
        )

    for k, n in g.nodes.items():
        if n.op == "PRelu" and len(n.inputs) == 2 and len(n.outputs) == 1:
            slope = g.const(n.inputs[1])
            if slope is not None:
                emit(k, n.inputs[0], slope, n.outputs[0])
        elif n.op == "Abs" and len(n.inputs) == 1:
            # Relu(x) + (x - Abs(x)) * c, every intermediate used once.
            x = n.inputs[0]
            relus = [j for j in consumers.get(x, []) if g.nodes[j].op == "Relu"]
            sub = only_user(n.outputs[0])
            if len(relus) != 1 or sub is None or g.nodes[sub].op != "Sub":
                continue
            if g.nodes[sub].inputs != [x, n.outputs[0]]:
                continue
            mul = only_user(g.nodes[sub].outputs[0])
            if mul is None or g.nodes[mul].op != "Mul":
                continue
            other = [i for i in g.nodes[mul].inputs if i != g.nodes[sub].outputs[0]]
            c = g.const(other[0]) if len(other) == 1 else None
            relu_out = g.nodes[relus[0]].outputs[0]
            add = only_user(g.nodes[mul].outputs[0])
            if c is None or add is None or only_user(relu_out) != add:
                continue
            a = g.nodes[add]
            if a.op != "Add" or sorted(a.inputs) != sorted([relu_out, g.nodes[mul].outputs[0]]):
                continue
            for j in (relus[0], k, sub, mul):
                replace[j] = b""
            emit(add, x, 2.0 * c, a.outputs[0])
    if not new_inits:
        return model, 0
    out = bytearray()
    for k, f in enumerate(g.fields):
        out += replace.get(k, f[3])
    out += b"".join(new_inits)
    top_out = bytearray()
    for k, f in enumerate(top):
        top_out += _len_field(_MODEL_GRAPH, bytes(out)) if k == at[0] else f[3]
    return bytes(top_out), len(new_inits) // 2


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _attr(node: memoryview, name: str) -> list[Field] | None:
    """The fields of a node's attribute `name` (None: not set)."""
    for n, _w, v, _r in fields(node):
        if n == _NODE_ATTR and isinstance(v, memoryview):
            fs = fields(v)
            if _sub(v, _ATTR_NAME) == [memoryview(name.encode())]:
                return fs
    return None


def _attr_str(fs: list[Field]) -> str:
    vals = [v for n, _w, v, _r in fs if n == _ATTR_S and isinstance(v, memoryview)]
    return bytes(vals[0]).decode() if vals else ""


def _attr_ints(fs: list[Field]) -> list[int]:
    out: list[int] = []
    for n, wt, v, _r in fs:
        if n == _ATTR_INTS and wt == 0 and isinstance(v, int):
            out.append(_signed(v))
        elif n == _ATTR_INTS and isinstance(v, memoryview):  # packed
            i = 0
            while i < len(v):
                x, i = varint(v, i)
                out.append(_signed(x))
    return out


def _sub(v: int | memoryview, num: int) -> list[int | memoryview]:
    return [x for n, _w, x, _r in fields(v) if n == num] if isinstance(v, memoryview) else []


def _fixed_input(g: _Graph) -> tuple[str, list[int]] | None:
    """(name, shape with the batch as 1) of the model's only input, if all else is fixed."""
    found: list[tuple[str, list[int]]] = []
    for num, _wt, val, _raw in g.fields:
        if num != _GRAPH_INPUT or not isinstance(val, memoryview):
            continue
        names = _sub(val, _VALUE_NAME)
        name = bytes(names[0]).decode() if names and isinstance(names[0], memoryview) else ""
        if name in g.inits:
            continue
        dims: list[int | None] = []
        for t in _sub(val, _VALUE_TYPE):
            for tt in _sub(t, _TYPE_TENSOR):
                for shape in _sub(tt, _TENSOR_SHAPE):
                    for dim in _sub(shape, _SHAPE_DIM):
                        d = _sub(dim, _DIM_VALUE)
                        dims.append(d[0] if d and isinstance(d[0], int) else None)
        if not dims or any(d is None for d in dims[1:]):
            return None
        found.append((name, [1 if d is None else d for d in dims]))
    return found[0] if len(found) == 1 else None


def _evaluate(model: bytes, g: _Graph, names: list[str], feed: tuple[str, list[int]]) -> list[Any]:
    """Values of the model's intermediate int64 tensors `names` on a zero input."""
    import onnxruntime as ort

    int64 = _len_field(_TYPE_TENSOR, _enc_varint(_TENSOR_ELEM << 3) + _enc_varint(_INT64))
    extra = b"".join(
        _len_field(
            _GRAPH_OUTPUT, _len_field(_VALUE_NAME, n.encode()) + _len_field(_VALUE_TYPE, int64)
        )
        for n in names
    )
    graph = b"".join(f[3] for f in g.fields) + extra
    top = b"".join(
        _len_field(_MODEL_GRAPH, graph) if f[0] == _MODEL_GRAPH else f[3] for f in fields(model)
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(top, sess_options=opts, providers=["CPUExecutionProvider"])
    return list(sess.run(names, {feed[0]: np.zeros(feed[1], np.float32)}))


def fold_pads(model: bytes) -> tuple[bytes, int]:
    """(the serialised model with each `Pad -> Conv` folded into the Conv, how many); only
    for a model with one input whose dimensions other than the batch are fixed."""
    top = fields(model)
    at = [k for k, f in enumerate(top) if f[0] == _MODEL_GRAPH and isinstance(f[2], memoryview)]
    if len(at) != 1:
        return model, 0
    graph = top[at[0]][2]
    assert isinstance(graph, memoryview)
    g = _Graph.parse(graph)
    consumers: dict[str, list[int]] = {}
    for k, n in g.nodes.items():
        for i in n.inputs:
            consumers.setdefault(i, []).append(k)
    pairs: list[tuple[int, int]] = []  # (pad, conv) field indices
    for k, n in g.nodes.items():
        if n.op != "Pad" or len(n.inputs) < 2 or any(n.inputs[2:]) or n.outputs[0] in g.outputs:
            continue
        users = consumers.get(n.outputs[0], [])
        if len(users) != 1 or g.nodes[users[0]].op != "Conv":
            continue
        conv, pad = g.fields[users[0]][2], g.fields[k][2]
        assert isinstance(conv, memoryview) and isinstance(pad, memoryview)
        mode = _attr(pad, "mode")
        if mode is not None and _attr_str(mode) != "constant":
            continue
        auto = _attr(conv, "auto_pad")
        if auto is not None and _attr_str(auto) != "NOTSET":
            continue
        # Only amounts computed at run time (constant ones are left to ONNX Runtime).
        if g.nodes[users[0]].inputs[0] == n.outputs[0] and n.inputs[1] not in g.inits:
            pairs.append((k, users[0]))
    feed = _fixed_input(g) if pairs else None
    if feed is None:
        return model, 0
    values = _evaluate(model, g, [g.nodes[p].inputs[1] for p, _c in pairs], feed)
    replace: dict[int, bytes] = {}
    for (p, c), v in zip(pairs, values, strict=True):
        pads = [int(x) for x in np.asarray(v).ravel()]
        if len(pads) != 8 or min(pads) < 0 or pads[0] or pads[1] or pads[4] or pads[5]:
            continue
        conv = g.fields[c][2]
        assert isinstance(conv, memoryview)
        old = _attr(conv, "pads")
        have = _attr_ints(old) if old is not None else [0, 0, 0, 0]
        new = [have[0] + pads[2], have[1] + pads[3], have[2] + pads[6], have[3] + pads[7]]
        attr = (
            _len_field(_ATTR_NAME, b"pads")
            + _len_field(_ATTR_INTS, b"".join(_enc_varint(x) for x in new))
            + _enc_varint(_ATTR_TYPE << 3)
            + _enc_varint(_ATTR_INTS_TYPE)
        )
        body = bytearray()
        first = True
        for num, _w, val, raw in fields(conv):
            if num == _NODE_INPUT and first:
                body += _len_field(_NODE_INPUT, g.nodes[p].inputs[0].encode())
                first = False
            elif (
                num == _NODE_ATTR
                and isinstance(val, memoryview)
                and _sub(val, _ATTR_NAME) == [memoryview(b"pads")]
            ):
                continue
            else:
                body += raw
        body += _len_field(_NODE_ATTR, attr)
        replace[c] = _len_field(_GRAPH_NODE, bytes(body))
        replace[p] = b""
    if not replace:
        return model, 0
    # Drop the nodes no output needs any more (the shape arithmetic of the folded pads).
    needed = set(g.outputs)
    live: set[int] = set()
    for k in sorted(g.nodes, reverse=True):
        n = g.nodes[k]
        if replace.get(k) == b"" or not any(o in needed for o in n.outputs):
            continue
        live.add(k)
        folded = [g.nodes[p].inputs[0] for p, c in pairs if c == k and replace.get(p) == b""]
        needed.update(folded or n.inputs[:1])
        needed.update(n.inputs[1:])
    out = bytearray()
    for k, f in enumerate(g.fields):
        if k not in g.nodes or k in live:
            out += replace.get(k, f[3])
    top_out = b"".join(
        _len_field(_MODEL_GRAPH, bytes(out)) if k == at[0] else f[3] for k, f in enumerate(top)
    )
    return top_out, sum(1 for v in replace.values() if not v)


def fast_model(path: Path) -> bytes | str:
    """The model at `path` with its PReLUs rewritten and its pads folded (serialised), or the
    path itself when there is nothing to rewrite (ONNX Runtime then reads the file)."""
    data = Path(path).read_bytes()
    prelu = b"PRelu" in data or b"Abs" in data
    pads = b"Pad" in data and b"Shape" in data  # pads computed from a shape
    if not prelu and not pads:
        return str(path)  # nothing to rewrite: parsing the pose model alone peaked at +60 MB
    out, n = rewrite_prelu(data) if prelu else (data, 0)
    out, m = fold_pads(out) if pads else (out, 0)
    return out if n or m else str(path)
