"""Turn BGR uint8 crops into a model's input tensor, as its manifest `io` table describes."""

from __future__ import annotations

import numpy as np

from stream.core.types import F32, U8
from stream.models.registry import IOSpec

_GRAY = np.array([0.114, 0.587, 0.2989], dtype=np.float32)  # B, G, R weights


def to_tensor(crops_bgr: U8, io: IOSpec) -> F32:
    """Convert [N, H, W, 3] BGR uint8 crops (already at the model's size) to its input tensor."""
    x = crops_bgr.astype(np.float32)
    if io.color == "rgb":
        x = x[..., ::-1]
    elif io.color == "gray":
        x = (x @ _GRAY)[..., None]
    x = x * np.float32(io.scale)
    mean = np.asarray(io.mean, dtype=np.float32)
    std = np.asarray(io.std, dtype=np.float32)
    if mean.any() or (std != 1).any():
        x = (x - mean) / std
    if io.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)
