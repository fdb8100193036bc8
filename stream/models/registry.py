"""Model registry: the manifest, file lookup in one models folder, sha256 checks, downloads."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.config import ENV_MODELS
from stream.core.data import default_manifest_path
from stream.core.errors import ModelError

ENV_CACHE = "EMOTION_STREAM_CACHE"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class IOSpec:
    """How to feed a model and read its outputs (see models/manifest.toml)."""

    input: str
    output: str = ""
    layout: str = "NCHW"
    color: str = "rgb"
    size: tuple[int, int] = (0, 0)
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop: float = 1.0
    activation: str = "softmax"
    labels: tuple[str, ...] = ()
    valence_index: int = -1
    arousal_index: int = -1
    strides: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry."""

    name: str
    file: str
    task: str
    sha256: str
    bytes: int
    licence: str
    source: str
    url: str
    io: IOSpec


_IO_KEYS = {f for f in IOSpec.__dataclass_fields__}
_SPEC_KEYS = {"file", "task", "sha256", "bytes", "licence", "source", "url", "io"}
_TASKS = {
    "detection",
    "embedding",
    "emotion",
    "pitch",
    "vad",
    "speaker",
    "landmarks",
    "blendshapes",
}


def _io_from_table(name: str, table: dict[str, Any]) -> IOSpec:
    unknown = set(table) - _IO_KEYS
    if unknown:
        raise ModelError(f"manifest entry {name}: unknown io key(s) {sorted(unknown)}")
    if "input" not in table:
        raise ModelError(f"manifest entry {name}: io.input is required")
    kw: dict[str, Any] = dict(table)
    for key in ("size", "mean", "std", "labels", "strides"):
        if key in kw:
            kw[key] = tuple(kw[key])
    io = IOSpec(**kw)
    if io.layout not in ("NCHW", "NHWC"):
        raise ModelError(f"manifest entry {name}: io.layout must be NCHW or NHWC")
    if io.color not in ("rgb", "bgr", "gray"):
        raise ModelError(f"manifest entry {name}: io.color must be rgb, bgr or gray")
    if io.activation not in ("softmax", "logits"):
        raise ModelError(f"manifest entry {name}: io.activation must be softmax or logits")
    return io


class Manifest:
    """The parsed model manifest."""

    def __init__(self, specs: dict[str, ModelSpec], path: Path) -> None:
        self.specs = specs
        self.path = path

    @classmethod
    def load(cls, path: Path | None = None) -> Manifest:
        """Parse a manifest file (default: models/manifest.toml).

        Raises:
            ModelError: the file is missing or an entry is malformed.
        """
        path = path or default_manifest_path()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"model manifest not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ModelError(f"model manifest {path} is not valid TOML: {exc}") from None
        specs: dict[str, ModelSpec] = {}
        for name, entry in data.get("models", {}).items():
            missing = {"file", "task", "sha256", "bytes"} - set(entry)
            if missing:
                raise ModelError(f"manifest entry {name}: missing {sorted(missing)}")
            unknown = set(entry) - _SPEC_KEYS
            if unknown:
                raise ModelError(f"manifest entry {name}: unknown key(s) {sorted(unknown)}")
            if entry["task"] not in _TASKS:
                raise ModelError(f"manifest entry {name}: task must be one of {sorted(_TASKS)}")
            specs[name] = ModelSpec(
                name=name,
                file=entry["file"],
                task=entry["task"],
                sha256=entry["sha256"].lower(),
                bytes=int(entry["bytes"]),
                licence=entry.get("licence", ""),
                source=entry.get("source", ""),
                url=entry.get("url", ""),
                io=_io_from_table(name, entry.get("io", {"input": "input"})),
            )
        return cls(specs, path)

    def __getitem__(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise ModelError(
                f"model {name!r} is not in the manifest {self.path}; "
                f"known: {', '.join(sorted(self.specs))}"
            ) from None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.specs.values())


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Folder for the hash cache: $EMOTION_STREAM_CACHE, else $XDG_CACHE_HOME/emotion-stream."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emotion-stream"


class HashCache:
    """Remembers verified hashes by (path, size, mtime, inode) so restarts skip re-hashing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._data = loaded
            except (OSError, ValueError):
                self._data = {}  # a damaged cache only costs a re-hash

    @staticmethod
    def _key(st: os.stat_result) -> dict[str, Any]:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}

    def sha256(self, file: Path, hasher: Callable[[Path], str] = sha256_file) -> str:
        """Return the file's sha256, computing it only when the file changed."""
        st = file.stat()
        key = str(file.resolve())
        hit = self._data.get(key)
        if hit is not None and {k: hit.get(k) for k in ("size", "mtime_ns", "ino")} == self._key(
            st
        ):
            return str(hit["sha256"])
        digest = hasher(file)
        self._data[key] = {**self._key(st), "sha256": digest}
        self._save()
        return digest

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
            tmp.replace(self.path)
        except OSError:
            pass  # read-only home: hashing still works, just without the cache


@dataclass(frozen=True)
class ModelStatus:
    """Result of checking one model file."""

    spec: ModelSpec
    path: Path
    state: str  # "ok", "missing", "size mismatch", "sha256 mismatch", "not verified"
    detail: str = ""


class ModelStore:
    """Finds model files in one folder and verifies them against the manifest."""

    def __init__(
        self,
        models_dir: Path,
        manifest: Manifest | None = None,
        cache: HashCache | None = None,
        verify: bool = True,
    ) -> None:
        self.dir = models_dir
        self.manifest = manifest or Manifest.load()
        self.cache = cache if cache is not None else HashCache(default_cache_dir() / "hashes.json")
        self.verify = verify

    def check(self, name: str) -> ModelStatus:
        """Check one model file's presence, size and sha256 without raising."""
        spec = self.manifest[name]
        path = self.dir / spec.file
        if not path.is_file():
            return ModelStatus(spec, path, "missing")
        size = path.stat().st_size
        if size != spec.bytes:
            return ModelStatus(spec, path, "size mismatch", f"{size} bytes, expected {spec.bytes}")
        if not self.verify:
            return ModelStatus(spec, path, "not verified")
        digest = self.cache.sha256(path)
        if digest != spec.sha256:
            return ModelStatus(spec, path, "sha256 mismatch", f"got {digest}")
        return ModelStatus(spec, path, "ok")

    def path(self, name: str) -> Path:
        """Return the verified path of a model file.

        Raises:
            ModelError: naming the file and the folder searched, and how to fix it.
        """
        status = self.check(name)
        if status.state in ("ok", "not verified"):
            return status.path
        hint = f"Set {ENV_MODELS} (or models.dir in the config) to the folder holding it" + (
            ", or run `emotion-stream models fetch`." if status.spec.url else "."
        )
        if status.state == "missing":
            raise ModelError(
                f"model file {status.spec.file} ({name}) not found in {self.dir}. {hint}"
            )
        raise ModelError(
            f"model file {status.path} is corrupt ({status.state}: {status.detail}). "
            f"Replace it with the file whose sha256 is {status.spec.sha256}."
        )

    def fetch(self, name: str, opener: Callable[[str], Any] = urllib.request.urlopen) -> Path:
        """Download a model from its manifest URL into the models folder, verifying sha256.

        Raises:
            ModelError: no URL, download failure, or hash mismatch (nothing is kept then).
        """
        spec = self.manifest[name]
        if not spec.url:
            raise ModelError(
                f"{name} has no download URL in the manifest; obtain {spec.file} from "
                f"{spec.source} and place it in {self.dir}"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.dir, prefix=f".{spec.file}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, opener(spec.url) as resp:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != spec.sha256:
                raise ModelError(
                    f"download of {spec.file} from {spec.url} has sha256 {h.hexdigest()}, "
                    f"expected {spec.sha256}; file discarded"
                )
            target = self.dir / spec.file
            tmp.replace(target)
            return target
        except OSError as exc:
            raise ModelError(f"could not download {spec.file} from {spec.url}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
