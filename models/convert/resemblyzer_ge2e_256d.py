"""Rebuild resemblyzer_ge2e_256d.onnx from the PyPI package Resemblyzer 0.1.4.

Upstream: `resemblyzer/pretrained.pt` in the wheel (GE2E speaker encoder, Apache-2.0). The
network is Resemblyzer's VoiceEncoder (3-layer LSTM 40 -> 256, linear 256 -> 256, ReLU, L2
norm), rebuilt here in a few lines so the package's own dependencies (webrtcvad, librosa) are
not needed, loaded with the checkpoint's weights and exported with torch.onnx (opset 17,
dynamic batch and frame count). Input `mels` [N,T,40] power mel spectrogram (n_fft 400, hop
160, 40 Slaney bands of 16 kHz audio); output `embedding` [N,256], L2-normalised.
Needs `pip install '.[convert]'` (torch). Checked against the PyTorch module.
Run: python models/convert/resemblyzer_ge2e_256d.py --out DIR
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _common import finish, parse_args, require, temp_onnx, upstream

NAME = "resemblyzer_ge2e_256d"
WHEEL = (
    "https://files.pythonhosted.org/packages/d9/b5/"
    "d897d5de5b2123a1ad5d32e8e007d83f76582f5c32c60992577263bd7c7e/"
    "Resemblyzer-0.1.4-py3-none-any.whl"
)
WHEEL_SHA256 = "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f"
MEMBER = "resemblyzer/pretrained.pt"
MEMBER_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
TORCH = "2.13.0"


def encoder() -> Any:
    """Resemblyzer's VoiceEncoder network (resemblyzer/voice_encoder.py), without its helpers."""
    import torch

    class VoiceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = torch.nn.Linear(256, 256)
            self.relu = torch.nn.ReLU()

        def forward(self, mels: Any) -> Any:
            _, (hidden, _) = self.lstm(mels)
            raw = self.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True)

    return VoiceEncoder()


def main() -> int:
    """Download, load, export, check against torch, write."""
    args = parse_args(NAME, __doc__)
    require("torch", TORCH)
    import torch

    checkpoint = upstream(args, WHEEL, MEMBER, MEMBER_SHA256, WHEEL_SHA256)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state"]
    model = encoder().eval()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
    tmp = temp_onnx(args, NAME)
    example = torch.rand(2, 160, 40)
    torch.onnx.export(
        model,
        (example,),
        str(tmp),
        input_names=["mels"],
        output_names=["embedding"],
        dynamic_axes={"mels": {0: "N", 1: "T"}, "embedding": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    rng = np.random.default_rng(0)

    def feeds() -> dict[str, np.ndarray]:
        return {"mels": rng.uniform(0, 2, (3, 200, 40)).astype(np.float32)}

    def original(x: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(x["mels"])).numpy()]

    return finish(args, NAME, tmp, feeds, original, tolerance=1e-5)


if __name__ == "__main__":
    raise SystemExit(main())
