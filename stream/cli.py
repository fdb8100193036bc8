"""The `emotion-stream` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stream import __version__
from stream.core.allocator import keep_trimming
from stream.core.config import ENV_CONFIG, ENV_MODELS, ENV_PROVIDER, Config, load_config
from stream.core.errors import ConfigError, EmotionStreamError, MediaError
from stream.core.notices import REGULATION
from stream.core.types import MediaInfo, VideoFrame
from stream.models.registry import ENV_MIRROR, ModelSpec, ModelStore

EXIT_CODES = """exit status:
  0  success            2  bad flag or config       3  unreadable, truncated or non-video input
  4  no faces found     5  model file missing/corrupt    6  no room: this worker is full
  7  no speech found (audio file)   1  other errors       130  interrupted
"""

MAIN_HELP = f"""\
Per-person facial expression analytics for live calls and video files.

Every face gets a stable ID ("Face 1", "Face 2", ... in order of appearance) that survives
leaving and re-entering the picture; each ID gets a smoothed expression timeline (neutral,
happiness, sadness, surprise, fear, disgust, anger; contempt where the model supports it), with
confidence, estimated valence/arousal, and its dominant expression with the share of time.

{REGULATION}

examples:
  emotion-stream analyze clip.mp4                      summary in the terminal
  emotion-stream analyze clip.mp4 --html report.html   report with timelines and thumbnails
  emotion-stream analyze clip.mp4 --json out.json --csv timeline.csv --fps 5
  emotion-stream models verify                         are all model files present and intact?

models are looked up in one folder: ${ENV_MODELS} or `models.dir` in the config
(e.g. export {ENV_MODELS}=../shared/models). Config: the packaged configs/default.toml, or
--config FILE / ${ENV_CONFIG}; ${ENV_PROVIDER}=cpu|cuda|auto picks the ONNX Runtime provider.

{EXIT_CODES}"""

ANALYZE_HELP = """\
Analyse a video (any container/codec ffmpeg reads, variable frame rate included) or an image.
Prints one line per face, e.g. "Face 1  dominant: surprise 88.1%  visible 12.3 s", then the
overall line. The share is the fraction of the face's visible time during which its smoothed
label was that expression (see README, "Definitions").
"""


SERVE_HELP = """\
Serve the web overlay and analyse live webcams or call tracks over WebRTC.

Open http://HOST:PORT/ in a browser, give consent, share the camera: every face gets a box with
a stable ID, its current expression and confidence, and a timeline in the side panel. Agents or
OBS can watch a session read-only at /viewer.html?session=ID&token=TOKEN (the page shows the
link). Events are JSON over WebSocket (schema at /schema/events.json); metrics at /metrics.
Nothing is stored unless --save-summaries or --save-reports is given.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (default: configs/default.toml)")
    p.add_argument(
        "--models", metavar="DIR", help=f"models folder (overrides ${ENV_MODELS} and models.dir)"
    )
    p.add_argument(
        "--provider", choices=("auto", "cpu", "cuda"), help="ONNX Runtime provider (default auto)"
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )


def _add_serve_ingest(s: argparse.ArgumentParser) -> None:
    """serve's HTTPS and WHIP flags."""
    net = s.add_argument_group(
        "HTTPS (phones and other machines need it for the camera) and WHIP ingest"
    )
    net.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain) for HTTPS")
    net.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    net.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="HTTPS with a certificate made now for this machine's names and addresses (kept "
        "in memory; its fingerprint is printed: compare it with the browser's warning page). "
        "For LAN demos: e.g. serve --host 0.0.0.0 --tls-self-signed, then open the printed "
        "https:// address on the phone",
    )
    net.add_argument(
        "--whip",
        metavar="PURPOSE",
        help="accept WHIP publishers (OBS Studio, GStreamer, browsers) at /whip with a bearer "
        "token made now and printed; PURPOSE is what you declare the people streamed were told "
        "and agreed to (permanent tokens: [whip] tokens in the config)",
    )


def _serve_ingest_config(args: argparse.Namespace, cfg: Config) -> Config:
    """Apply serve's HTTPS and WHIP flags; a --whip token is made and printed here."""
    tls = {
        k: v
        for k, v in (
            ("tls_cert", args.tls_cert),
            ("tls_key", args.tls_key),
            ("tls_self_signed", args.tls_self_signed or None),
        )
        if v is not None
    }
    if tls:
        from stream.live.tls import check

        cfg = cfg.replace("live", **tls)
        check(cfg.live.tls_cert, cfg.live.tls_key, cfg.live.tls_self_signed)
    if args.whip is not None:
        import secrets

        from stream.core.config import WhipToken

        token = WhipToken(secrets.token_urlsafe(24), args.whip)
        cfg = cfg.replace("whip", tokens=(*cfg.whip.tokens, token))
        print(f"emotion-stream: WHIP bearer token for this run: {token.token}", flush=True)
    return cfg


WATCH_HELP = """\
Analyse a stream URL or device live, with the same events, viewer page and reports as serve.

Anything FFmpeg opens: RTSP cameras, RTMP (pull, or --listen for a push from OBS or ffmpeg),
SRT, HLS, HTTP streams, local devices and files. A network stream that drops is reopened with
backoff (0.5 s doubling to --retry-max); viewers see a source_lost event meanwhile.
With --redis (or [cluster] redis_url) the process is a worker of the cluster like serve: the
call is on the supervisor wall, counts against cluster.capacity, and any worker shows it to
viewers.

examples:
  emotion-stream watch rtsp://user:pass@10.0.0.7:554/stream1 --purpose "lobby camera, signed"
  emotion-stream watch rtmp://0.0.0.0:1935/live/key --listen --purpose "webinar, speakers agreed"
      then in OBS: Settings > Stream > Custom, Server rtmp://THIS-MACHINE:1935/live, key "key"
  emotion-stream watch srt://0.0.0.0:9000 --listen --purpose ...
  emotion-stream watch https://example.org/live/index.m3u8 --purpose ... --events -
  emotion-stream watch /dev/video0 --format v4l2 --purpose ... --save-reports out/
"""


def _add_watch(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    fmt: type[argparse.RawDescriptionHelpFormatter],
) -> None:
    w = sub.add_parser(
        "watch",
        help="analyse a stream URL (RTSP, RTMP, SRT, HLS, HTTP) or device live",
        formatter_class=fmt,
        description=WATCH_HELP,
        epilog=EXIT_CODES,
    )
    w.add_argument("url", metavar="URL", help="stream URL, device or file")
    w.add_argument(
        "--purpose",
        required=True,
        help="what you declare the people in the stream were told and agreed to (recorded in "
        "the session's events and reports)",
    )
    w.add_argument(
        "--listen", action="store_true", help="wait for a publisher to push to URL (RTMP, SRT)"
    )
    w.add_argument("--format", dest="fmt", metavar="FMT", help="input format, e.g. v4l2")
    w.add_argument(
        "--retry-max", type=float, default=10.0, metavar="S", help="longest reconnect wait (10)"
    )
    _add_live_outputs(w)
    _add_common(w)


def _add_live_outputs(p: argparse.ArgumentParser) -> None:
    """The flags of a session the process feeds itself (watch, join): outputs and viewer."""
    p.add_argument(
        "--events", type=Path, metavar="FILE", help="write every event as a JSON line ('-': stdout)"
    )
    p.add_argument(
        "--save-reports", type=Path, metavar="DIR", help="write the JSON/CSV/HTML report at the end"
    )
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--host", help="viewer page address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="viewer page port (default 8080; 0: any free)")
    p.add_argument("--no-voice", action="store_true", help="video only")
    _add_cluster(p)


def _add_cluster(p: argparse.ArgumentParser) -> None:
    """The cluster flags of serve, watch and join (README, Scaling)."""
    cl = p.add_argument_group(
        "cluster (workers sharing one Redis: calls on one wall, viewers on any worker)"
    )
    cl.add_argument(
        "--redis",
        metavar="URL",
        help="join the workers of this Redis (redis://HOST:6379/0; cluster.redis_url)",
    )
    cl.add_argument(
        "--worker-url",
        metavar="URL",
        help="how browsers reach this worker, e.g. https://w2.example.org (cluster.worker_url; "
        "default http://HOST:PORT)",
    )


def _cluster_config(args: argparse.Namespace, cfg: Config) -> Config:
    """Apply --redis and --worker-url."""
    cluster = {
        k: v
        for k, v in (("redis_url", args.redis), ("worker_url", args.worker_url))
        if v is not None
    }
    return cfg.replace("cluster", **cluster) if cluster else cfg


def _live_session_config(args: argparse.Namespace) -> Config:
    """The config with the viewer address, cluster flags and --no-voice of watch/join applied."""
    from stream.live.protocol import MAX_PURPOSE, printable

    if args.verbose == 0:
        logging.getLogger("stream.live").setLevel(logging.INFO)
    if not args.purpose.strip():
        raise ConfigError("--purpose must say what the people in the stream agreed to")
    try:
        args.purpose = printable(args.purpose, "--purpose", MAX_PURPOSE)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cfg = _config(args)
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if updates:
        cfg = cfg.replace("live", **updates)
    if args.no_voice:
        cfg = cfg.replace("audio", enabled=False)
    return _cluster_config(args, cfg)


def _print_faces(summary: dict[str, Any] | None) -> None:
    for f in (summary or {}).get("faces", []):
        dom = f.get("dominant") or {}
        print(f"{f.get('name')}  dominant: {dom.get('label')} {100 * dom.get('share', 0):.1f}%")


def _cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from stream.live.url import run_watch

    cfg = _live_session_config(args)
    try:
        summary = asyncio.run(
            run_watch(
                cfg,
                args.url,
                args.purpose,
                args.listen,
                args.fmt,
                args.events,
                args.save_reports,
                args.duration,
                args.retry_max,
            )
        )
    except OSError as exc:
        raise EmotionStreamError(
            f"cannot listen on {cfg.live.host}:{cfg.live.port}: {exc.strerror or exc}"
        ) from None
    _print_faces(summary)
    return 0


JOIN_HELP = """\
Join a Janus VideoRoom as a bot and analyse every participant live, with the same events,
viewer page and reports as serve and watch.

The bot joins without publishing, subscribes to each publisher's audio and video (one WebRTC
peer each, answering Janus's offer), follows joins and leaves, and analyses everyone in one
session: face numbers are shared across the room, and the faces on a participant's video are
named after their display name ("Alice", then "Alice 2" if their camera shows two people).
Audio tracks are analysed as voices (--no-voice: video only). A participant who leaves has
their tracks ended; viewers get an error event participant_left. With --redis the bot is a
worker of the cluster like serve: the room's call is on the wall and viewable from any worker.

Consent and purpose are YOUR responsibility as the operator: the room's participants do not
see a consent page, and a VideoRoom lists only publishers, so they may not even see the bot
(unless the room has notify_joining). Tell them a bot analyses their faces and voices, and
what for, and get their agreement first; --purpose records what you declare they agreed to,
in every event stream and report. Nothing is stored unless you ask (--events,
--save-reports).

examples:
  emotion-stream join ws://janus.example.org:8188 --room 1234 --purpose "team retro, all agreed"
  emotion-stream join wss://meet.example.org/janus --room 42 --pin 9876 --display "Analytics" \\
      --purpose "coaching call, agent and customer agreed" --events - --save-reports out/
"""


def _add_join(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    fmt: type[argparse.RawDescriptionHelpFormatter],
) -> None:
    j = sub.add_parser(
        "join",
        help="join a Janus video room as a bot and analyse every participant live",
        formatter_class=fmt,
        description=JOIN_HELP,
        epilog=EXIT_CODES,
    )
    j.add_argument("url", metavar="WS_URL", help="Janus's WebSocket API (ws:// or wss://)")
    j.add_argument("--room", type=int, required=True, metavar="N", help="the VideoRoom's ID")
    j.add_argument(
        "--purpose",
        required=True,
        help="what you declare the participants were told and agreed to (recorded in the "
        "session's events and reports)",
    )
    j.add_argument(
        "--display", default="emotion-stream", metavar="NAME", help="the bot's name in the room"
    )
    j.add_argument("--pin", metavar="PIN", help="the room's PIN, if it has one")
    _add_live_outputs(j)
    _add_common(j)


def _cmd_join(args: argparse.Namespace) -> int:
    import asyncio

    from stream.live.janus import JanusError, run_join

    cfg = _live_session_config(args)
    try:
        summary = asyncio.run(
            run_join(
                cfg,
                args.url,
                args.room,
                args.purpose,
                args.display,
                args.pin,
                args.events,
                args.save_reports,
                args.duration,
            )
        )
    except JanusError as exc:
        raise EmotionStreamError(str(exc)) from None
    except OSError as exc:
        raise EmotionStreamError(
            f"cannot listen on {cfg.live.host}:{cfg.live.port}: {exc.strerror or exc}"
        ) from None
    _print_faces(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render --help in the README)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="emotion-stream", description=MAIN_HELP, formatter_class=fmt
    )
    parser.add_argument("--version", action="version", version=f"emotion-stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser(
        "analyze",
        help="analyse a video or image file",
        description=ANALYZE_HELP,
        formatter_class=fmt,
        epilog=EXIT_CODES,
    )
    a.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a video, audio or image file; several files, folders, glob patterns "
        "('clips/**/*.mp4') or list files (.txt, one path per line) go to --out DIR",
    )
    a.add_argument(
        "--fps",
        type=float,
        help="analysed frames per second of video (default 10; more = finer, slower)",
    )
    a.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the summary as JSON to FILE (or stdout when FILE is omitted or '-')",
    )
    a.add_argument("--csv", type=Path, metavar="FILE", help="write the per-face timeline as CSV")
    a.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report with plots")
    a.add_argument(
        "--no-voice", action="store_true", help="skip voice analysis (faster; video only)"
    )
    a.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    many = a.add_argument_group("many files")
    many.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for per-file JSON/CSV/HTML, index.json, index.csv and overview.html "
        "(required for many files; files with complete outputs there are skipped on a rerun)",
    )
    many.add_argument(
        "--workers", type=int, default=1, metavar="N", help="files analysed in parallel (1)"
    )
    many.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the workers as Ray actors: on ADDRESS (e.g. ray://head:10001 or auto), or a "
        "local Ray instance when omitted (needs: pip install 'emotion-stream[ray]')",
    )
    many.add_argument(
        "--cpus-per-worker", type=float, default=1.0, metavar="C", help="Ray CPUs per worker (1)"
    )
    many.add_argument(
        "--gpus-per-worker", type=float, default=0.0, metavar="G", help="Ray GPUs per worker (0)"
    )
    _add_common(a)

    s = sub.add_parser(
        "serve",
        help="run the live server with the web overlay",
        formatter_class=fmt,
        description=SERVE_HELP,
        epilog=EXIT_CODES,
    )
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    s.add_argument("--max-fps", type=float, help="analysed frames per second per stream (15)")
    s.add_argument(
        "--save-summaries",
        type=Path,
        metavar="DIR",
        help="on shutdown, write each session's summary as JSON here (default: store nothing)",
    )
    s.add_argument(
        "--save-reports",
        type=Path,
        metavar="DIR",
        help="when a session ends, write its report here as JSON, CSV and HTML (the same files "
        "the page offers for download; default: store nothing)",
    )
    _add_serve_ingest(s)
    _add_cluster(s)
    _add_common(s)

    _add_watch(sub, fmt)
    _add_join(sub, fmt)

    m = sub.add_parser(
        "models",
        help="list, verify or download model files",
        formatter_class=fmt,
        description="Model files are checked against models/manifest.toml (size and sha256). "
        "fetch downloads the files upstream publishes ready-made (YuNet from its repository, "
        "Silero VAD out of its PyPI wheel, MediaPipe's face_landmarker.task), verifies each "
        "sha256 and writes it atomically; for the models converted from other formats it "
        "prints the script in models/convert/ that rebuilds each one.",
        epilog="examples:\n"
        "  emotion-stream models fetch --models ~/models\n"
        f"  {ENV_MIRROR}=https://mirror.example.org/models emotion-stream models fetch\n"
        "  (a mirror holds the upstream files as host/path, the layout wget -x writes)\n\n"
        + EXIT_CODES,
    )
    m.add_argument(
        "action",
        choices=("list", "verify", "fetch"),
        help="list: what the manifest names and where it comes from; verify: check every file "
        "(sha256); fetch: download the files upstream publishes, verify, and say how to "
        "rebuild the rest",
    )
    m.add_argument(
        "--mirror",
        metavar="URL",
        help=f"fetch from this mirror instead of the upstream hosts: URL/HOST/PATH for each "
        f"upstream https://HOST/PATH (default ${ENV_MIRROR}; a file:// folder works too)",
    )
    _add_common(m)
    return parser


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if args.models:
        cfg = cfg.replace("models", dir=args.models)
    if args.provider:
        cfg = cfg.replace("runtime", provider=args.provider)
    return cfg


def _progress(
    no_bar: bool,
) -> Callable[[Iterable[VideoFrame], MediaInfo], Iterable[VideoFrame]]:
    """Frame-iterator wrapper showing a progress bar in media seconds (terminals only)."""

    def wrap(frames: Iterable[VideoFrame], info: MediaInfo) -> Iterable[VideoFrame]:
        if no_bar or info.kind != "video" or not sys.stderr.isatty():
            yield from frames
            return
        from tqdm import tqdm

        total = round(info.duration, 1) or None
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"
        with tqdm(
            total=total, desc=info.path.name, leave=False, file=sys.stderr, bar_format=fmt
        ) as bar:
            done = 0.0
            for frame in frames:
                bar.update(round(frame.t - done, 3))
                done = frame.t
                yield frame

    return wrap


def _is_batch(args: argparse.Namespace) -> bool:
    one = args.paths[0]
    return (
        len(args.paths) > 1
        or args.out is not None
        or args.ray is not None
        or args.workers > 1
        or one.is_dir()
        or (not one.exists() and any(c in str(one) for c in "*?["))
        or one.suffix.lower() in (".txt", ".list", ".lst")
    )


def _cmd_analyze_many(args: argparse.Namespace, cfg: Config) -> int:
    from stream.offline.batch import FileResult, analyze_many

    if args.out is None:
        raise ConfigError("analysing several files needs --out DIR for their outputs")
    if args.json or args.csv or args.html:
        raise ConfigError("with several files, --json/--csv/--html are per file: use --out DIR")
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")

    def bar(rows: Iterator[FileResult], total: int) -> Iterator[FileResult]:
        if args.no_progress or not sys.stderr.isatty():
            yield from rows
            return
        from tqdm import tqdm

        with tqdm(total=total, desc="files", unit="file", leave=False, file=sys.stderr) as b:
            for r in rows:
                b.update(1)
                b.set_postfix_str(Path(r.file).name[-30:])
                yield r

    rows = analyze_many(
        [str(p) for p in args.paths],
        args.out,
        cfg,
        workers=args.workers,
        ray_address=args.ray or None,
        use_ray=args.ray is not None,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        progress=bar,
    )
    for r in sorted(rows, key=lambda r: r.file):
        what = (
            r.error or "no faces found"
            if r.status not in ("ok", "skipped")
            else f"{r.faces} face(s), overall {r.dominant} {100 * r.dominant_share:.0f}%"
            if r.faces
            else "no faces; speech analysed"
        )
        print(f"{r.status:<8} {r.file}: {what}")
    failed = [r for r in rows if r.status == "failed"]
    print(
        f"{len(rows)} file(s): {len(rows) - len(failed)} analysed, {len(failed)} failed; "
        f"index: {args.out / 'index.csv'}, overview: {args.out / 'overview.html'}"
    )
    if failed:
        raise MediaError(
            f"{len(failed)} of {len(rows)} files could not be analysed (see index.csv)"
        )
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from stream.analysis import report
    from stream.offline.analyze import analyze_file, require_findings, with_fps

    cfg = with_fps(_config(args), args.fps)
    if args.no_voice:
        cfg = cfg.replace("audio", enabled=False)
    if _is_batch(args):
        return _cmd_analyze_many(args, cfg)
    args.path = args.paths[0]
    result = analyze_file(args.path, cfg, progress=_progress(args.no_progress))
    out = sys.stderr if args.json == "-" else sys.stdout
    for line in report.summary_lines(result):
        print(line, file=out)
    if args.json:
        if args.json == "-":
            import json

            print(json.dumps(result.to_dict(), indent=2))
        else:
            report.write_json(result, Path(args.json))
            print(f"wrote {args.json}", file=out)
    if args.csv:
        report.write_csv(result, args.csv)
        print(f"wrote {args.csv}", file=out)
    if args.html:
        report.write_html(result, args.html)
        print(f"wrote {args.html}", file=out)
    if result.error:
        raise MediaError(f"{result.error}; results above cover the part before the failure")
    require_findings(result, args.path)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from stream.live.server import run_server

    if args.verbose == 0:  # sessions starting and ending are worth a line by default
        logging.getLogger("stream.live").setLevel(logging.INFO)
    cfg = _config(args)
    updates = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("max_fps", args.max_fps))
        if v is not None
    }
    if updates:
        cfg = cfg.replace("live", **updates)
    cfg = _cluster_config(args, cfg)
    cfg = _serve_ingest_config(args, cfg)
    try:
        received = asyncio.run(run_server(cfg, args.save_summaries, args.save_reports))
    except OSError as exc:
        raise EmotionStreamError(
            f"cannot listen on {cfg.live.host}:{cfg.live.port}: {exc.strerror or exc}"
        ) from None
    if received == signal.SIGINT:  # Ctrl-C: "interrupted" (130) as --help says; SIGTERM: 0
        print("emotion-stream: interrupted", file=sys.stderr)
        return 130
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from stream.models.registry import Manifest

    cfg = _config(args)
    manifest = Manifest.load(Path(cfg.models.manifest) if cfg.models.manifest else None)
    store = ModelStore(cfg.models_dir(), manifest)
    print(f"models folder: {store.dir}  (set by {ENV_MODELS} or models.dir)")
    if args.action == "fetch":
        return _fetch_models(store, args.mirror)
    bad = 0
    for spec in manifest:
        if args.action == "list":
            exists = (store.dir / spec.file).is_file()
            state = "present" if exists else "missing"
        else:
            st = store.check(spec.name)
            state = st.state + (f" ({st.detail})" if st.detail else "")
            bad += st.state != "ok"
        print(
            f"  {spec.name:<28} {spec.task:<11} {spec.bytes / 1e6:6.2f} MB  {state:<9} "
            f"{spec.licence}"
        )
        if args.action == "list":
            how = "fetch" if spec.url else f"convert: {spec.convert}" if spec.convert else "manual"
            print(f"      {how}; from {spec.source or 'unknown source'}")
    if bad:
        print(f"{bad} model file(s) missing or corrupt", file=sys.stderr)
        return 5
    return 0


def _fetch_models(store: ModelStore, mirror: str | None) -> int:
    """`models fetch`: download what upstream publishes, then list the conversions left."""
    import os

    from tqdm import tqdm

    from stream.models.registry import mirror_url

    mirror = os.environ.get(ENV_MIRROR, "") if mirror is None else mirror
    if mirror:
        print(f"mirror: {mirror}  (set by --mirror or {ENV_MIRROR})")
    failed: list[str] = []
    to_convert: list[ModelSpec] = []
    for spec in store.manifest:
        st = store.check(spec.name)
        if st.state == "ok":
            print(f"  {spec.name:<28} ok (already present)")
            continue
        if not spec.url:
            to_convert.append(spec)
            print(f"  {spec.name:<28} {st.state}: converted model, rebuild it (see below)")
            continue
        src = mirror_url(spec.url, mirror)
        print(f"  {spec.name:<28} downloading {src}" + (f" ({spec.member})" if spec.member else ""))
        with tqdm(
            total=None,
            unit="B",
            unit_scale=True,
            desc=f"  {spec.file}",
            leave=False,
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
        ) as bar:

            def progress(done: int, total: int | None, bar: tqdm = bar) -> None:
                if total and bar.total != total:
                    bar.total = total
                bar.update(done - bar.n)

            try:
                path = store.fetch(spec.name, progress=progress, mirror=mirror)
            except EmotionStreamError as exc:
                failed.append(spec.name)
                print(f"  {spec.name:<28} failed: {exc}", file=sys.stderr)
                continue
        print(f"  {spec.name:<28} ok: {path} (sha256 verified)")
    if to_convert:
        print(
            f"{len(to_convert)} model(s) are converted from other formats and not published "
            "ready-made upstream. Rebuild each from a checkout of this repository (pip install "
            "'.[convert]' first; README \"Models\"):"
        )
        for spec in to_convert:
            print(f"  python {spec.convert or '<no script>'} --out {store.dir}")
            print(f"      from {spec.source}")
    if failed:
        print(f"{len(failed)} download(s) failed: {', '.join(failed)}", file=sys.stderr)
    if to_convert:
        print(
            f"{len(to_convert)} model file(s) still missing: run the scripts above", file=sys.stderr
        )
    return 5 if failed or to_convert else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a command; user errors print one line and return their exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # long-running commands hand free C heap pages back (stream/core/allocator.py)
    trimming = keep_trimming() if args.command in ("serve", "watch", "join") else None
    try:
        if args.command == "analyze":
            return _cmd_analyze(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "watch":
            return _cmd_watch(args)
        if args.command == "join":
            return _cmd_join(args)
        return _cmd_models(args)
    except EmotionStreamError as exc:
        print(f"emotion-stream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("emotion-stream: interrupted", file=sys.stderr)
        return 130
    finally:
        if trimming is not None:
            trimming.set()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
