"""One live session fed by a source the process opens itself (`watch`, `join`), served like
`serve` sessions: the viewer page and report downloads, events as JSON lines, reports at the end.

The process is a worker like `serve`: with `cluster.redis_url` it joins the cluster, its call
is on the wall and counts against `cluster.capacity`, and viewers may connect to any worker.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.analysis.stages import StageSource
from stream.core.config import Config
from stream.live.source import MediaSource

if TYPE_CHECKING:
    from stream.live.server import LiveServer


async def run_live(
    config: Config,
    purpose: str,
    source: MediaSource,
    via: str,
    what: str,
    events: Path | None = None,
    reports_dir: Path | None = None,
    duration: float | None = None,
    stages: StageSource | None = None,
    server: LiveServer | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any] | None:
    """Run one session fed by `source` until it ends, `duration` passes, or Ctrl-C / SIGTERM;
    print what it does and the viewer link.

    Args:
        via: the kind of source ("watch", "join"), shown on the wall.
        what: what the source is, for the first printed line ("watching rtsp://...").
        events: write every event as a JSON line here ("-": stdout).
        reports_dir: write the session's JSON, CSV and HTML reports here when it ends.
        stages: loaded stages (default: load the models).
        server: a started server to run the session on (default: start one for it, with
            `reports_dir`, and shut it down at the end; a given one saves reports as it is set).
        stop: ends the session like Ctrl-C when set.

    Returns:
        The session summary event.

    Raises:
        Refused: this worker has no room (a one-line error naming a worker with room).
        Exception: whatever opening the source raised (after the viewer server shut down).
    """
    from stream.live.server import LiveServer
    from stream.live.session import Subscriber
    from stream.live.tls import open_urls

    own = server is None
    if server is None:
        server = LiveServer(config, stages=stages)
        server.host.save_reports = reports_dir
        await server.start()
    host = server.host
    out = None
    try:
        session = await host.open(purpose, via)
        if events is not None:
            out = sys.stdout if str(events) == "-" else events.open("w", encoding="utf-8")

        async def write(line: str) -> None:
            if out is not None:
                out.write(line + "\n")
                out.flush()

        sub = Subscriber(write, "publisher", limit=4096)
        session.subscribe(sub)
        try:
            await session.attach(source)
        except BaseException:
            await host.close(session, "source failed")
            raise
        base = open_urls(config.live.host, server.port, server.tls is not None)[-1]
        if server.cluster.enabled and server.cluster.url:  # how browsers reach this worker
            base = server.cluster.url
        base = base.rstrip("/")
        note = sys.stderr if out is sys.stdout else sys.stdout
        print(f"emotion-stream: {what} (purpose: {purpose!r})", file=note, flush=True)
        print(
            f"emotion-stream: viewer {base}/viewer.html?session={session.id}"
            f"&token={session.viewer_token}  (Ctrl-C to stop)",
            file=note,
            flush=True,
        )
        loop = asyncio.get_running_loop()
        stopped = stop or asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM) if stop is None else ()
        for sig in signals:
            loop.add_signal_handler(sig, stopped.set)
        ended = asyncio.ensure_future(source.done.wait())
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(stopped.wait()), ended}
        if duration is not None:
            waits.add(asyncio.ensure_future(asyncio.sleep(duration)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            for w in waits:
                w.cancel()
        if stopped.is_set():
            reason = "stopped"
        else:
            reason = "source ended" if source.done.is_set() else "duration reached"
        summary = await host.close(session, reason)
        await sub.flush()
        return summary
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
        if own:
            await server.shutdown()
