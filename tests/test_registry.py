"""Model registry: manifest, sha256 verification (cached), clear errors, downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stream.core.config import RuntimeConfig
from stream.core.errors import ModelError
from stream.models.registry import HashCache, Manifest, ModelStore, sha256_file
from stream.models.runtime import SessionFactory, choose_providers

from .conftest import MODELS


@pytest.mark.integration
def test_manifest_matches_shared_models() -> None:
    store = ModelStore(MODELS, Manifest.load(), HashCache(None))
    states = {spec.name: store.check(spec.name).state for spec in store.manifest}
    assert states and all(s == "ok" for s in states.values()), states


def test_missing_model_error_names_file_and_folder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, Manifest.load(), HashCache(None))
    with pytest.raises(ModelError) as err:
        store.path("yunet_n_dynamic")
    assert "yunet_n_dynamic.onnx" in str(err.value) and str(tmp_path) in str(err.value)
    assert "EMOTION_STREAM_MODELS" in str(err.value)


@pytest.mark.integration
def test_corrupt_model_is_rejected(tmp_path: Path) -> None:
    src = MODELS / "fer_minixception_7c.onnx"
    dst = tmp_path / src.name
    data = bytearray(src.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte flipped
    dst.write_bytes(bytes(data))
    store = ModelStore(tmp_path, Manifest.load(), HashCache(None))
    with pytest.raises(ModelError, match=r"corrupt.*sha256 mismatch"):
        store.path("fer_minixception_7c")


@pytest.mark.integration
def test_hash_cache_skips_rehash_until_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    shutil.copy(MODELS / "fer_minixception_7c.onnx", f)
    calls: list[Path] = []

    def counting(p: Path) -> str:
        calls.append(p)
        return sha256_file(p)

    cache_file = tmp_path / "cache" / "hashes.json"
    first = HashCache(cache_file).sha256(f, counting)
    again = HashCache(cache_file).sha256(f, counting)  # a "restart": new object, same file
    assert first == again and len(calls) == 1
    f.write_bytes(f.read_bytes() + b"x")
    HashCache(cache_file).sha256(f, counting)
    assert len(calls) == 2


def _manifest_with_url(tmp_path: Path, url: str, sha: str) -> Manifest:
    text = (
        "[models.yunet]\nfile = 'yunet.onnx'\ntask = 'detection'\n"
        f"sha256 = '{sha}'\nbytes = 322906\nurl = '{url}'\n"
        "[models.yunet.io]\ninput = 'input'\n"
    )
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return Manifest.load(path)


@pytest.mark.integration
def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    src = MODELS / "yunet_n_dynamic.onnx"
    manifest = _manifest_with_url(tmp_path, src.as_uri(), sha256_file(src))
    store = ModelStore(tmp_path / "models", manifest, HashCache(None))
    path = store.fetch("yunet")
    assert path.read_bytes() == src.read_bytes()
    assert store.check("yunet").state == "ok"


@pytest.mark.integration
def test_fetch_with_wrong_hash_keeps_nothing(tmp_path: Path) -> None:
    src = MODELS / "yunet_n_dynamic.onnx"
    manifest = _manifest_with_url(tmp_path, src.as_uri(), "0" * 64)
    store = ModelStore(tmp_path / "models", manifest, HashCache(None))
    with pytest.raises(ModelError, match="expected 0000"):
        store.fetch("yunet")
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    manifest = _manifest_with_url(tmp_path, (tmp_path / "absent.onnx").as_uri(), "0" * 64)
    store = ModelStore(tmp_path / "models", manifest, HashCache(None))
    with pytest.raises(ModelError, match="could not download"):
        store.fetch("yunet")


def test_provider_choice() -> None:
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", both) == both
    assert choose_providers("cpu", both) == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])


@pytest.mark.integration
def test_sessions_are_shared() -> None:
    store = ModelStore(MODELS, Manifest.load(), HashCache(None))
    factory = SessionFactory(store, RuntimeConfig(provider="cpu"))
    a = factory.get("fer_minixception_7c")
    assert factory.get("fer_minixception_7c") is a
    assert factory.active_provider("fer_minixception_7c") == "CPUExecutionProvider"
