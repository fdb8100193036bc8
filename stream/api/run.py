"""`analyze` and `analyze_many`: the CLI's `analyze` as Python calls, with its options."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from stream.analysis.stages import Stages
from stream.analysis.summary import Analysis as _Internal
from stream.api.results import Analysis
from stream.core.config import Config, load_config
from stream.core.errors import ConfigError, EmotionStreamError, MediaError
from stream.core.types import MediaInfo, VideoFrame
from stream.offline import batch
from stream.offline.analyze import analyze_file, require_findings
from stream.offline.media import probe

P = ParamSpec("P")
R = TypeVar("R")


def public(fn: Callable[P, R]) -> Callable[P, R]:
    """Raise user errors from the public call itself: an `EmotionStreamError` loses the
    internal frames of its traceback (its message says what to do)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except EmotionStreamError as exc:
            raise exc.with_traceback(None) from None

    return wrapper


def make_config(
    *,
    fps: float | None = None,
    voice: bool | None = None,
    models: str | Path | None = None,
    config: str | Path | Config | None = None,
    provider: str | None = None,
) -> Config:
    """The configuration the CLI would use with these options.

    Args:
        fps: analysed frames per second of video (`--fps`; default `analyze.fps`, 10).
        voice: analyse the audio track (`--no-voice` is `voice=False`; default `audio.enabled`).
        models: the models folder (`--models`; default `$EMOTION_STREAM_MODELS`, `models.dir`).
        config: a TOML file (`--config`) or a loaded `Config`; default as the CLI.
        provider: ONNX Runtime provider, "auto", "cpu" or "cuda" (`--provider`).

    Raises:
        ConfigError: an invalid value, or a config file that is missing or invalid.
    """
    cfg = config if isinstance(config, Config) else load_config(_path(config))
    if models is not None:
        cfg = cfg.replace("models", dir=str(models))
    if provider is not None:
        if provider not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"provider must be auto, cpu or cuda, got {provider!r}")
        cfg = cfg.replace("runtime", provider=provider)
    if fps is not None:
        if not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        cfg = cfg.replace("analyze", fps=float(fps))
    if voice is not None:
        cfg = cfg.replace("audio", enabled=bool(voice))
    return cfg


def _path(p: str | Path | None) -> Path | None:
    return None if p is None else Path(p).expanduser()


_lock = threading.Lock()
_cached: tuple[list[Any], Stages] | None = None


def _models_key(config: Config) -> list[Any]:
    """What loaded models depend on: every section but `analyze` (rates are per stream)."""
    return [getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "analyze"]


def stages_for(config: Config) -> Stages:
    """The loaded models for `config`: loaded once and kept while the settings they depend on
    stay the same (repeated `analyze` calls in a notebook, at any fps, do not reload them)."""
    global _cached
    key = _models_key(config)
    with _lock:
        if _cached is None or _cached[0] != key:
            _cached = (key, Stages(config))
        return _cached[1]


def _shows(progress: bool | None) -> bool:
    """Show a progress bar: when asked, or by default when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


def _frame_bar(frames: Iterable[VideoFrame], info: MediaInfo) -> Iterator[VideoFrame]:
    """The frames, with a progress bar in media seconds (videos)."""
    if info.kind != "video":
        yield from frames
        return
    from tqdm.auto import tqdm

    fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"
    total = round(info.duration, 1) or None
    with tqdm(total=total, desc=info.path.name, leave=False, bar_format=fmt) as bar:
        done = 0.0
        for frame in frames:
            bar.update(round(frame.t - done, 3))
            done = frame.t
            yield frame


def _check(a: _Internal, path: Path, allow_partial: bool, allow_empty: bool) -> None:
    """The CLI's meanings: a decoding failure part-way, no speech in audio, no faces nor speech."""
    if a.error and not allow_partial:
        raise MediaError(f"{a.error} (allow_partial=True keeps the part before the failure)")
    if not allow_empty:
        require_findings(a, path)


@public
def analyze(
    path: str | Path,
    *,
    fps: float | None = None,
    voice: bool | None = None,
    models: str | Path | None = None,
    config: str | Path | Config | None = None,
    provider: str | None = None,
    allow_partial: bool = False,
    allow_empty: bool = False,
    progress: bool | None = None,
) -> Analysis:
    """Analyse a video, image or audio file, as `emotion-stream analyze PATH`.

    Models are loaded on the first call and reused while the options stay the same.

    Args:
        path: the file.
        fps: analysed frames per second of video (default 10).
        voice: analyse the audio track (default: as configured, on).
        models: models folder (default `$EMOTION_STREAM_MODELS` or the config's `models.dir`).
        config: TOML config file or loaded `Config` (default: as the CLI finds it).
        provider: "auto", "cpu" or "cuda".
        allow_partial: return what was analysed when decoding fails part-way (`complete` is
            then False) instead of raising `MediaError`.
        allow_empty: return an analysis without faces or speech instead of raising
            `NoFacesError` (`NoSpeechError` for an audio file).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        The typed analysis.

    Raises:
        MediaError: the file is missing or unreadable (exit status 3 in the CLI).
        NoFacesError: no face (and no speech) was found (exit status 4).
        NoSpeechError: an audio file without speech (exit status 7).
        ModelError: a model file is missing or corrupt (exit status 5).
        ConfigError: an option or the config file is invalid (exit status 2).
    """
    p = Path(path).expanduser()
    cfg = make_config(fps=fps, voice=voice, models=models, config=config, provider=provider)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    probe(p)  # an unreadable file fails before the models load
    a = analyze_file(p, cfg, stages_for(cfg), progress=_frame_bar if _shows(progress) else None)
    _check(a, p, allow_partial, allow_empty)
    return Analysis(a)


@dataclass(frozen=True)
class FileAnalysis:
    """One file of `analyze_many`: its index row and, unless it failed or was skipped, its
    analysis.

    Attributes:
        row: the file's line of `index.json`/`index.csv` (`status` ok, no_faces, no_speech,
            skipped or failed; `error`; `outputs` the JSON/CSV/HTML written).
        analysis: the analysis (None for a failed file, and for a file skipped because its
            outputs in `out` were complete: read `row.outputs` then).
    """

    row: batch.FileResult
    analysis: Analysis | None

    @property
    def path(self) -> Path:
        return Path(self.row.file)

    @property
    def status(self) -> str:
        return self.row.status


class _Worker:
    """The folder command's worker (models loaded once) that also hands back the analysis."""

    def __init__(self, config: Config, stages: Stages | None = None) -> None:
        self.config = config
        self.stages = stages or Stages(config)

    def analyse(self, file: str, name: str, out_dir: str | None) -> tuple[batch.FileResult, Any]:
        path = Path(file)
        try:
            a = analyze_file(path, self.config, self.stages)
            outputs = {}
            if out_dir is not None:
                from stream.analysis import report

                out = Path(out_dir)
                outputs = {k: str(out / f"{name}.{k}") for k in ("json", "csv", "html")}
                report.write_json(a, Path(outputs["json"]))
                report.write_csv(a, Path(outputs["csv"]))
                report.write_html(a, Path(outputs["html"]))
        except EmotionStreamError as exc:
            return batch.FileResult(str(path), name, "failed", str(exc)), None
        except Exception as exc:  # a bug on one file must not stop the rest
            return batch.FileResult(str(path), name, "failed", f"{type(exc).__name__}: {exc}"), None
        status, note = batch.status_of(a)
        row = batch._row_from(a.to_dict(), path, name, status)
        row.error = a.error or note
        row.outputs = outputs
        return row, a


_WORKER: _Worker | None = None


def _init(config: Config) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = _Worker(config)


def _run(file: str, name: str, out_dir: str | None) -> tuple[batch.FileResult, Any]:
    assert _WORKER is not None
    return _WORKER.analyse(file, name, out_dir)


def _local(
    jobs: list[tuple[str, str]], out: str | None, cfg: Config, workers: int
) -> Iterator[tuple[batch.FileResult, Any]]:
    if workers <= 1:
        w = _Worker(cfg, stages_for(cfg))
        for file, name in jobs:
            yield w.analyse(file, name, out)
        return
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(cfg,)) as pool:
        futures = [pool.submit(_run, f, n, out) for f, n in jobs]
        for fut in as_completed(futures):
            yield fut.result()


def _ray(
    jobs: list[tuple[str, str]], out: str | None, cfg: Config, address: str, workers: int
) -> Iterator[tuple[batch.FileResult, Any]]:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ConfigError("ray= needs Ray: pip install 'emotion-stream[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False)
    actor = ray.remote(num_cpus=1)(_Worker)
    pool = ActorPool([actor.remote(cfg) for _ in range(max(workers, 1))])
    yield from pool.map_unordered(lambda a, job: a.analyse.remote(job[0], job[1], out), jobs)


@public
def analyze_many(
    paths: str | Path | Iterable[str | Path],
    *,
    out: str | Path | None = None,
    workers: int = 1,
    ray: str | bool | None = None,
    fps: float | None = None,
    voice: bool | None = None,
    models: str | Path | None = None,
    config: str | Path | Config | None = None,
    provider: str | None = None,
    progress: bool | None = None,
) -> Iterator[FileAnalysis]:
    """Analyse many files, as `emotion-stream analyze PATHS --out DIR`; yields each file's
    result as it completes (not in input order). One bad file is reported (`status` failed)
    and does not stop the rest.

    Args:
        paths: files, folders (their media files, recursively), glob patterns
            (`"clips/**/*.mp4"`) and list files (.txt: one path per line).
        out: folder for each file's JSON/CSV/HTML and, once every file is done, the folder
            command's `index.json`, `index.csv` and `overview.html`; files whose outputs there
            are complete are skipped. None: write nothing.
        workers: files analysed in parallel (processes, or Ray actors).
        ray: run the workers as Ray actors: an address ("auto", "ray://head:10001") or True
            for a local Ray instance (needs `emotion-stream[ray]`).
        fps: analysed frames per second of video (default 10).
        voice: analyse audio tracks (default: as configured, on).
        models: models folder (default `$EMOTION_STREAM_MODELS` or `models.dir`).
        config: TOML config file or loaded `Config`.
        provider: "auto", "cpu" or "cuda".
        progress: show a progress bar over the files (default: when stderr is a terminal).

    Raises:
        MediaError: an input names nothing (before any file is analysed).
        ConfigError: an invalid option.
    """
    items = [str(paths)] if isinstance(paths, str | Path) else [str(p) for p in paths]
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    cfg = make_config(fps=fps, voice=voice, models=models, config=config, provider=provider)
    files = batch.expand_inputs(items)
    results = _clean(_many(files, None if out is None else Path(out), workers, ray, cfg))
    return _files_bar(results, len(files)) if _shows(progress) else results


def _clean(items: Iterator[R]) -> Iterator[R]:
    """`public` for a generator: user errors while iterating lose their internal frames."""
    try:
        yield from items
    except EmotionStreamError as exc:
        raise exc.with_traceback(None) from None


def _files_bar(results: Iterator[FileAnalysis], total: int) -> Iterator[FileAnalysis]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="files", unit="file", leave=False) as bar:
        for item in results:
            bar.update(1)
            bar.set_postfix_str(item.path.name[-30:])
            yield item


def _many(
    files: list[Path], out: Path | None, workers: int, ray: str | bool | None, cfg: Config
) -> Iterator[FileAnalysis]:
    names = batch.output_names(files)
    rows: list[batch.FileResult] = []
    jobs: list[tuple[str, str]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for f, n in zip(files, names, strict=True):
        prev = batch._complete(out / f"{n}.json", f) if out is not None else None
        if out is None or prev is None:
            jobs.append((str(f), n))
            continue
        row = batch._row_from(prev, f, n, "skipped")
        row.outputs = {k: str(out / f"{n}.{k}") for k in ("json", "csv", "html")}
        rows.append(row)
        yield FileAnalysis(row, None)
    cfg = batch._per_worker(cfg, workers)
    target = None if out is None else str(out)
    if ray is None or ray is False:
        results = _local(jobs, target, cfg, workers)
    else:
        results = _ray(jobs, target, cfg, "" if ray is True else str(ray), workers)
    for row, a in results:
        rows.append(row)
        yield FileAnalysis(row, None if a is None else Analysis(a))
    if out is not None:
        batch.write_index(rows, out)
