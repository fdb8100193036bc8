"""Reading protobuf's wire format without the protobuf package: enough to walk an ONNX model
(stream/models/graph.py) and MediaPipe's face-geometry metadata (stream/vision/headpose.py)."""

from __future__ import annotations

#: One field: number, wire type, value (an int for varints, else a view of its bytes), and the
#: whole encoded field (views into the message's bytes, not copies).
Field = tuple[int, int, int | memoryview, memoryview]


def varint(b: bytes | memoryview, i: int) -> tuple[int, int]:
    """The varint at `b[i:]` and the index after it."""
    out = shift = 0
    while True:
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return out, i


def fields(data: bytes | memoryview) -> list[Field]:
    """The fields of one protobuf message in order, each with its own encoded bytes.

    Raises:
        ValueError: a wire type other than varint, 64-bit, length-delimited or 32-bit.
    """
    out: list[Field] = []
    b = memoryview(data)
    i = 0
    while i < len(b):
        start = i
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        val: int | memoryview
        if wt == 0:
            val, i = varint(b, i)
        elif wt == 1:
            val, i = b[i : i + 8], i + 8
        elif wt == 2:
            n, i = varint(b, i)
            val, i = b[i : i + n], i + n
        elif wt == 5:
            val, i = b[i : i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wt} not supported")
        out.append((num, wt, val, b[start:i]))
    return out
