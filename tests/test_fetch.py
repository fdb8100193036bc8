"""`models fetch` from a local HTTP mirror serving copies of the real upstream files.

The manifest's upstream URLs are used as they are; EMOTION_STREAM_MODEL_MIRROR (or `mirror=`)
maps https://HOST/PATH to MIRROR/HOST/PATH, which a web server on 127.0.0.1 answers.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stream.core.errors import ModelError
from stream.models.registry import HashCache, Manifest, ModelStore, mirror_url, sha256_file

from .conftest import MODELS

ROOT = Path(__file__).resolve().parents[1]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A web server on 127.0.0.1 serving the folder `root` (host/path layout)."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _place(root: Path, url: str, data: bytes) -> None:
    """Put `data` where the mirror serves `url`."""
    parts = urllib.parse.urlsplit(url)
    dst = root / parts.netloc / parts.path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


def _wheel(member: str, data: bytes) -> bytes:
    """A small wheel (a zip) holding `data` at `member`, as PyPI wheels hold model files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("silero_vad/__init__.py", "")
        zf.writestr(member, data)
        zf.writestr("silero_vad-6.2.3.dist-info/METADATA", "Name: silero-vad\nVersion: 6.2.3\n")
    return buf.getvalue()


def _store(tmp_path: Path, manifest: Manifest | None = None) -> ModelStore:
    return ModelStore(tmp_path / "models", manifest or Manifest.load(), HashCache(None))


def _silero_manifest(tmp_path: Path, url: str, archive_sha: str) -> Manifest:
    real = Manifest.load()["silero_vad_v6"]
    text = (
        f"[models.silero]\nfile = '{real.file}'\ntask = 'vad'\nsha256 = '{real.sha256}'\n"
        f"bytes = {real.bytes}\nurl = '{url}'\nmember = '{real.member}'\n"
        f"archive_sha256 = '{archive_sha}'\n"
    )
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return Manifest.load(path)


def test_mirror_url_maps_host_and_path() -> None:
    url = "https://files.pythonhosted.org/packages/84/ef/x.whl"
    assert mirror_url(url, "http://127.0.0.1:8/m/") == (
        "http://127.0.0.1:8/m/files.pythonhosted.org/packages/84/ef/x.whl"
    )
    assert mirror_url(url, "") == url
    assert mirror_url("file:///a/b.onnx", "http://m") == "file:///a/b.onnx"


def test_manifest_says_where_every_model_comes_from() -> None:
    manifest = Manifest.load()
    fetchable = [s.name for s in manifest if s.url]
    converted = [s.name for s in manifest if s.convert]
    print(f"\nfetchable: {fetchable}\nconverted: {converted}")
    for spec in manifest:
        assert spec.source and spec.licence, spec.name
        assert bool(spec.url) != bool(spec.convert), f"{spec.name}: url or convert script"
        if spec.convert:
            assert (ROOT / spec.convert).is_file(), spec.convert
    assert {"yunet_n_dynamic", "yunet_n_320x320", "silero_vad_v6"} <= set(fetchable)
    assert manifest["silero_vad_v6"].member == "silero_vad/data/silero_vad.onnx"
    assert len(converted) == 9  # + pose_landmark_lite and _full (models/convert/pose_landmark.py)


@pytest.mark.integration
def test_fetch_downloads_and_verifies_from_the_mirror(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    base, root = mirror
    store = _store(tmp_path)
    spec = store.manifest["yunet_n_dynamic"]
    original = (MODELS / spec.file).read_bytes()
    _place(root, spec.url, original)
    seen: list[tuple[int, int | None]] = []
    path = store.fetch(spec.name, mirror=base, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == original and store.check(spec.name).state == "ok"
    assert seen[-1] == (len(original), len(original))  # Content-Length reached the progress
    assert sorted(p.name for p in store.dir.iterdir()) == [spec.file]
    print(f"\nfetched {spec.file}: {len(original)} bytes in {len(seen)} progress steps")


@pytest.mark.integration
def test_corrupted_download_is_refused_and_nothing_is_left(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    base, root = mirror
    store = _store(tmp_path)
    spec = store.manifest["yunet_n_320x320"]
    data = bytearray((MODELS / spec.file).read_bytes())
    data[5000] ^= 0x01  # one bit flipped in transit
    _place(root, spec.url, bytes(data))
    with pytest.raises(ModelError) as err:
        store.fetch(spec.name, mirror=base)
    msg = str(err.value)
    assert "\n" not in msg and f"expected {spec.sha256}" in msg and "discarded" in msg
    assert list(store.dir.iterdir()) == []


@pytest.mark.integration
def test_member_is_extracted_from_a_wheel(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    base, root = mirror
    real = Manifest.load()["silero_vad_v6"]
    onnx = (MODELS / real.file).read_bytes()
    wheel = _wheel(real.member, onnx)
    _place(root, real.url, wheel)
    manifest = _silero_manifest(tmp_path, real.url, hashlib.sha256(wheel).hexdigest())
    store = _store(tmp_path, manifest)
    path = store.fetch("silero", mirror=base)
    assert path.read_bytes() == onnx and sha256_file(path) == real.sha256
    assert [p.name for p in store.dir.iterdir()] == [real.file]  # no wheel, no temp files
    print(f"\nwheel {len(wheel)} bytes -> member {real.member} {len(onnx)} bytes")


@pytest.mark.integration
def test_member_is_extracted_from_an_npm_style_tarball(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    base, root = mirror
    onnx = (MODELS / "fer_minixception_7c.onnx").read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("package/model/m.onnx")
        info.size = len(onnx)
        tf.addfile(info, io.BytesIO(onnx))
    url = "https://registry.npmjs.org/pkg/-/pkg-1.0.0.tgz"
    _place(root, url, buf.getvalue())
    path = tmp_path / "manifest.toml"
    sha = hashlib.sha256(onnx).hexdigest()
    path.write_text(
        f"[models.m]\nfile = 'm.onnx'\ntask = 'emotion'\nsha256 = '{sha}'\nbytes = {len(onnx)}\n"
        f"url = '{url}'\nmember = 'package/model/m.onnx'\n"
    )
    store = _store(tmp_path, Manifest.load(path))
    assert store.fetch("m", mirror=base).read_bytes() == onnx


@pytest.mark.integration
def test_wrong_archive_or_missing_member_is_one_line_and_leaves_nothing(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    base, root = mirror
    real = Manifest.load()["silero_vad_v6"]
    wheel = _wheel(real.member, (MODELS / real.file).read_bytes())
    _place(root, real.url, wheel)
    store = _store(tmp_path, _silero_manifest(tmp_path, real.url, "0" * 64))
    with pytest.raises(ModelError, match=r"archive sha256 .* expected 0{64}; discarded") as e1:
        store.fetch("silero", mirror=base)
    _place(root, real.url, _wheel("other/name.onnx", b"x"))
    store = _store(tmp_path, _silero_manifest(tmp_path, real.url, ""))
    with pytest.raises(ModelError, match=r"silero_vad/data/silero_vad\.onnx is not in") as e2:
        store.fetch("silero", mirror=base)
    with pytest.raises(ModelError, match="HTTP 404") as e3:
        store.fetch("silero", mirror=base + "/nowhere")
    for e in (e1, e2, e3):
        assert "\n" not in str(e.value)
        print(f"\n{e.value}")
    assert list(store.dir.iterdir()) == []


@pytest.mark.integration
def test_cli_fetch_through_the_mirror(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    base, root = mirror
    manifest = Manifest.load()
    served = ["yunet_n_dynamic", "yunet_n_320x320", "face_landmarker_task"]
    for name in served:
        spec = manifest[name]
        _place(root, spec.url, (MODELS / spec.file).read_bytes())
    # silero's wheel is not on this mirror: its failure must be one line, the rest still fetched
    out_dir = tmp_path / "models"
    env = {
        **os.environ,
        "EMOTION_STREAM_MODELS": str(out_dir),
        "EMOTION_STREAM_MODEL_MIRROR": base,
        "EMOTION_STREAM_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "stream.cli", "models", "fetch"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    print(out.stdout, out.stderr)
    assert out.returncode == 5 and "Traceback" not in out.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(manifest[n].file for n in served)
    for name in served:
        assert f"{name:<28} ok:" in out.stdout
    silero_errors = [ln for ln in out.stderr.splitlines() if "silero_vad_v6" in ln]
    assert len(silero_errors) == 2 and "HTTP 404" in silero_errors[0]  # the error + the summary
    for spec in manifest:
        if spec.convert:
            assert f"python {spec.convert} --out {out_dir}" in out.stdout
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.stdout.count("ok (already present)") == len(served)
    shutil.rmtree(out_dir)
