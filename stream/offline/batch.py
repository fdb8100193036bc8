"""Many files: `analyze` over folders, globs and list files, on local worker processes or a Ray
cluster, with per-file outputs, an index and a combined overview.

Each worker loads the models once and analyses whole files (a file is the unit of work: its
identities and voices need the whole file). One bad file is reported in the index and does not
stop the rest; a rerun skips files whose outputs are complete.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import html
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stream.analysis import report
from stream.analysis.stages import Stages
from stream.analysis.summary import Analysis
from stream.core.config import Config
from stream.core.errors import ConfigError, EmotionStreamError, MediaError
from stream.core.notices import NOTICE
from stream.offline.media import IMAGE_SUFFIXES

#: What a folder scan picks up (explicit files and list entries may be anything ffmpeg reads).
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".mts", ".flv", ".wmv"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".ogg", ".opus", ".flac", ".aac"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES | AUDIO_SUFFIXES
LIST_SUFFIXES = {".txt", ".list", ".lst"}
STATUSES = ("ok", "no_faces", "skipped", "failed")


def expand_inputs(items: Iterable[str]) -> list[Path]:
    """Files named by `items`: files, folders (their media files, recursively), glob patterns
    (`clips/**/*.mp4`), and list files (.txt/.list/.lst: one path per line, # comments).

    Raises:
        MediaError: an item matches nothing.
    """
    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _is_media(f))
            if not found:
                raise MediaError(f"{p}: folder holds no media files")
            out += found
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
            names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            out += [(p.parent / n if not Path(n).is_absolute() else Path(n)) for n in names]
        elif p.exists():
            out.append(p)
        elif glob.has_magic(item):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                raise MediaError(f"{item}: pattern matches no file")
            out += found
        else:
            raise MediaError(f"{p}: file not found")
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_SUFFIXES


def output_names(files: list[Path]) -> list[str]:
    """A stable output name per file: its stem, with a short hash of its path where two inputs
    share a stem."""
    stems = [f.stem for f in files]
    return [
        s
        if stems.count(s) == 1
        else f"{s}-{hashlib.sha1(str(f.resolve()).encode()).hexdigest()[:6]}"
        for s, f in zip(stems, files, strict=True)
    ]


@dataclass
class FileResult:
    """One row of the index."""

    file: str
    name: str
    status: str  # ok, no_faces, no_speech, failed, skipped
    error: str = ""
    duration_s: float = 0.0
    wall_s: float = 0.0
    faces: int = 0
    dominant: str = ""
    dominant_share: float = 0.0
    uncertain_share: float = 0.0
    complete: bool = False
    outputs: dict[str, str] = field(default_factory=dict)


def _complete(json_path: Path, source: Path) -> dict[str, Any] | None:
    """The previous result if its outputs are complete and newer than the source."""
    try:
        data: dict[str, Any] = json.loads(json_path.read_text("utf-8"))
        ok = data["analysis"]["complete"] and Path(data["source"]["path"]) == source
        fresh = json_path.stat().st_mtime >= source.stat().st_mtime
        outs = [json_path.with_suffix(s) for s in (".csv", ".html")]
        return data if ok and fresh and all(o.is_file() for o in outs) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _row_from(data: dict[str, Any], file: Path, name: str, status: str) -> FileResult:
    overall = data.get("overall", {})
    return FileResult(
        file=str(file),
        name=name,
        status=status,
        duration_s=float(data["source"].get("duration_s", 0.0)),
        wall_s=float(data["analysis"].get("wall_s", 0.0)),
        faces=len(data.get("faces", [])),
        dominant=overall.get("dominant", {}).get("label", ""),
        dominant_share=float(overall.get("dominant", {}).get("share", 0.0)),
        uncertain_share=float(overall.get("shares", {}).get("uncertain", 0.0)),
        complete=bool(data["analysis"]["complete"]),
    )


def status_of(a: Analysis) -> tuple[str, str]:
    """A file's index status and note: `ok` (faces, or speech), `no_speech` (an audio file
    without speech: "no speech found"), else `no_faces` (and no speech, when heard)."""
    from stream.offline.analyze import has_speech

    if a.faces or has_speech(a):
        return "ok", ""
    if a.info.kind == "audio":
        return "no_speech", "no speech found"
    heard = a.info.kind == "video" and a.voice is not None
    return "no_faces", "no faces and no speech found" if heard else "no faces found"


class FileAnalyzer:
    """Analyses files one at a time with models loaded once (one per worker)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stages = Stages(config)

    def __call__(self, file: str, name: str, out_dir: str) -> FileResult:
        """Analyse `file` and write `<out_dir>/<name>.{json,csv,html}`; never raises."""
        from stream.offline.analyze import analyze_file

        path, out = Path(file), Path(out_dir)
        outputs = {k: str(out / f"{name}.{k}") for k in ("json", "csv", "html")}
        try:
            a = analyze_file(path, self.config, self.stages)
            report.write_json(a, Path(outputs["json"]))
            report.write_csv(a, Path(outputs["csv"]))
            report.write_html(a, Path(outputs["html"]))
        except EmotionStreamError as exc:
            return FileResult(str(path), name, "failed", str(exc))
        except Exception as exc:  # a bug on one file must not stop the rest
            return FileResult(str(path), name, "failed", f"{type(exc).__name__}: {exc}")
        status, note = status_of(a)
        row = _row_from(a.to_dict(), path, name, status)
        row.error = a.error or note
        row.outputs = outputs
        return row


_WORKER: FileAnalyzer | None = None


def _init_worker(config: Config) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = FileAnalyzer(config)


def _run_in_worker(file: str, name: str, out_dir: str) -> FileResult:
    assert _WORKER is not None
    return _WORKER(file, name, out_dir)


def _per_worker(config: Config, workers: int) -> Config:
    """Split the cores between workers: one inference thread each when there are several."""
    if workers <= 1:
        return config
    return config.replace("runtime", intra_op_threads=1)


def run_local(
    jobs: list[tuple[str, str]], out_dir: Path, config: Config, workers: int
) -> Iterator[FileResult]:
    """Analyse (file, name) jobs in `workers` processes; yields results as they finish."""
    cfg = _per_worker(config, workers)
    if workers <= 1:
        analyzer = FileAnalyzer(cfg)
        for file, name in jobs:
            yield analyzer(file, name, str(out_dir))
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        futures = [pool.submit(_run_in_worker, f, n, str(out_dir)) for f, n in jobs]
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            yield fut.result()


def run_ray(
    jobs: list[tuple[str, str]],
    out_dir: Path,
    config: Config,
    address: str | None,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
) -> Iterator[FileResult]:
    """Analyse jobs on a Ray cluster: one actor per worker loads the models once.

    Every node must see the input files, the output folder and the models folder at the same
    paths (a shared file system), as with any Ray job that reads files.

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'emotion-stream[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False)
    cfg = _per_worker(config, workers)
    actor = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(FileAnalyzer)
    pool = ActorPool([actor.remote(cfg) for _ in range(max(workers, 1))])
    yield from pool.map_unordered(
        lambda a, job: a.__call__.remote(job[0], job[1], str(out_dir)), jobs
    )


def write_index(rows: list[FileResult], out_dir: Path) -> tuple[Path, Path, Path]:
    """index.json, index.csv and overview.html over every file of the run."""
    rows = sorted(rows, key=lambda r: r.file)
    j, c, h = out_dir / "index.json", out_dir / "index.csv", out_dir / "overview.html"
    data = {
        "schema": "emotion-stream.batch",
        "schema_version": 1,
        "files": [asdict(r) for r in rows],
        "counts": {
            s: sum(r.status == s for r in rows)
            for s in ("ok", "no_faces", "no_speech", "skipped", "failed")
        },
    }
    j.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    cols = [k for k in asdict(rows[0]) if k != "outputs"] if rows else ["file"]
    with c.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    h.write_text(_overview_html(rows, out_dir), encoding="utf-8")
    return j, c, h


def _overview_html(rows: list[FileResult], out_dir: Path) -> str:
    esc = html.escape
    body = []
    for r in rows:
        link = (
            f"<a href='{esc(r.name)}.html'>{esc(Path(r.file).name)}</a>"
            if r.status
            in (
                "ok",
                "no_faces",
                "no_speech",
                "skipped",
            )
            else esc(Path(r.file).name)
        )
        share = f"{100 * r.dominant_share:.0f}%" if r.dominant else ""
        unc = f"{100 * r.uncertain_share:.0f}%" if r.dominant else ""
        body.append(
            f"<tr class='{esc(r.status)}'><td>{link}</td><td>{esc(r.status)}</td>"
            f"<td class='n'>{r.duration_s:.1f}</td><td class='n'>{r.faces}</td>"
            f"<td>{esc(r.dominant)} {share}</td><td class='n'>{unc}</td>"
            f"<td>{esc(r.error)}</td></tr>"
        )
    ok = sum(r.status in ("ok", "no_faces", "no_speech", "skipped") for r in rows)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>emotion-stream: {len(rows)} files</title><style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}} td.n{{text-align:right}}
tr.failed td{{color:#b00020}} .notice{{color:#555;max-width:60em}}
</style></head><body><h1>{len(rows)} files, {ok} analysed</h1>
<table><tr><th>file</th><th>status</th><th>duration s</th><th>faces</th>
<th>overall dominant expression (share of person-time)</th><th>uncertain</th><th>error</th></tr>
{"".join(body)}</table>
<p class="notice">{esc(NOTICE)}</p></body></html>
"""


def analyze_many(
    items: list[str],
    out_dir: Path,
    config: Config,
    workers: int = 1,
    ray_address: str | None = None,
    use_ray: bool = False,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    progress: Callable[[Iterator[FileResult], int], Iterator[FileResult]] | None = None,
) -> list[FileResult]:
    """Analyse many files into `out_dir`; returns one row per file (index files written too).

    Raises:
        MediaError: an input names nothing.
    """
    files = expand_inputs(items)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    rows: list[FileResult] = []
    jobs: list[tuple[str, str]] = []
    for f, n in zip(files, names, strict=True):
        prev = _complete(out_dir / f"{n}.json", f)
        if prev is not None:
            rows.append(_row_from(prev, f, n, "skipped"))
        else:
            jobs.append((str(f), n))
    if use_ray:
        results = run_ray(
            jobs, out_dir, config, ray_address, workers, cpus_per_worker, gpus_per_worker
        )
    else:
        results = run_local(jobs, out_dir, config, workers)
    if progress is not None:
        results = progress(results, len(jobs))
    rows += list(results)
    write_index(rows, out_dir)
    return rows
