"""One live session fed by a source the process opens itself (`watch`, `join`), served like
`serve` sessions: the viewer page and report downloads, events as JSON lines, reports at the end.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from stream.core.config import Config
from stream.live.session import LiveSession


class Source(Protocol):
    """What the runner needs of a source: when it has ended for good, and how to stop it."""

    @property
    def done(self) -> asyncio.Event: ...

    def stop(self) -> None: ...


async def run_live(
    config: Config,
    purpose: str,
    start: Callable[[LiveSession], Awaitable[Source]],
    what: str,
    events: Path | None = None,
    reports_dir: Path | None = None,
    duration: float | None = None,
) -> dict[str, Any] | None:
    """Run one session fed by `start(session)` until the source ends, `duration` passes, or
    Ctrl-C / SIGTERM; print what it does and the viewer link.

    Args:
        start: opens the source and attaches it to the session (errors propagate, after the
            viewer server is shut down again).
        what: what the source is, for the first printed line ("watching rtsp://...").
        events: write every event as a JSON line here ("-": stdout).
        reports_dir: write the session's JSON, CSV and HTML reports here when it ends.

    Returns:
        The session summary event.
    """
    from stream.live import reports
    from stream.live.server import LiveServer
    from stream.live.session import Subscriber
    from stream.live.tls import open_urls

    server = LiveServer(config)
    server.save_reports = reports_dir
    await server.start()
    session = LiveSession(config, server.stages, server.executor, purpose, server.audio_executor)
    server.sessions[session.id] = session
    out = None
    if events is not None:
        out = sys.stdout if str(events) == "-" else events.open("w", encoding="utf-8")

    async def write(line: str) -> None:
        if out is not None:
            out.write(line + "\n")
            out.flush()

    sub = Subscriber(write, "publisher", limit=4096)
    session.subscribe(sub)
    try:
        source = await start(session)
    except BaseException:
        server.sessions.pop(session.id, None)
        await session.close("source failed")
        if out is not None and out is not sys.stdout:
            out.close()
        await server.shutdown()
        raise
    base = open_urls(config.live.host, server.port, server.tls is not None)[-1].rstrip("/")
    note = sys.stderr if out is sys.stdout else sys.stdout
    print(f"emotion-stream: {what} (purpose: {purpose!r})", file=note, flush=True)
    print(
        f"emotion-stream: viewer {base}/viewer.html?session={session.id}"
        f"&token={session.viewer_token}  (Ctrl-C to stop)",
        file=note,
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result("stopped"))
    waits: set[asyncio.Future[Any]] = {stop, asyncio.ensure_future(source.done.wait())}
    if duration is not None:
        waits.add(asyncio.ensure_future(asyncio.sleep(duration)))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    reason = "stopped" if stop.done() else "source ended"
    for w in waits:
        w.cancel()
    source.stop()
    server.sessions.pop(session.id, None)
    summary = await session.close(reason)
    await sub.flush()
    reports.save_quietly(session, reports_dir)
    if out is not None and out is not sys.stdout:
        out.close()
    await server.shutdown()
    return summary
