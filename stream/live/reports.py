"""Reports of live sessions: the same writers as `analyze` (JSON, CSV, HTML), from the session's
`StreamAnalysis`, downloaded from the publisher page at any time or written at the session's end.

Route: `GET /report/SESSION.{json,csv,html}?token=VIEWER_TOKEN` (the token the publisher page
got in `session.started`; the viewer link carries the same one). Nothing is stored unless the
server was started with `--save-reports DIR`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from stream.analysis import report
from stream.analysis.summary import Analysis
from stream.core.types import MediaInfo
from stream.live.protocol import token_matches

log = logging.getLogger(__name__)

#: /report/<session id>.<format>
ROUTE = re.compile(r"^/report/([A-Za-z0-9_-]{1,64})\.(json|csv|html)$")

#: Reports are self-contained: inline styles and data: images, nothing else.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


def session_analysis(session: Any) -> Analysis:
    """The session so far as an `Analysis` (until the session closes, the last analysed frame
    of each track is not counted yet).

    The analysis' lock makes the read consistent with the inference thread's updates.
    """
    duration = max(session.clock() - session.started, 0.0)
    info = MediaInfo(
        path=Path(f"live session {session.id[:6]}"),
        kind="live",
        width=0,
        height=0,
        duration=duration,
        fps=session.config.live.max_fps,
        codec="WebRTC",
        has_audio=bool(session.analysis.speakers),
    )
    result: Analysis = session.analysis.result(info, duration)
    return result


def render(session: Any, fmt: str) -> tuple[bytes, str]:
    """A report of the session in `fmt` ("json", "csv" or "html"): body and content type."""
    text_of, ctype = report.FORMATS[fmt]
    body = text_of(session_analysis(session)).encode("utf-8", errors="replace")
    return body, f"{ctype}; charset=utf-8"  # a stored string never fails the download


def save(session: Any, folder: Path) -> list[Path]:
    """Write the session's JSON, CSV and HTML reports into `folder` (after it closed)."""
    return report.write_reports(session_analysis(session), folder, f"session-{session.id}")


def http_response(sessions: Mapping[str, Any], target: str, head: bool = False) -> Response | None:
    """Answer `GET /report/SESSION.FMT?token=...`; None for any other path.

    A wrong or missing token gets the same 404 as an unknown session. The report comes as a
    download (Content-Disposition), with a policy that allows only its inline style and images.
    """
    url = urlsplit(target)
    m = ROUTE.match(url.path)
    if m is None:
        return None
    sid, fmt = m.groups()
    token = (parse_qs(url.query).get("token") or [""])[0]
    session = sessions.get(sid)
    if session is None or not token_matches(token, session.viewer_token):
        return _response(HTTPStatus.NOT_FOUND, b"no such session\n", "text/plain", head)
    try:
        body, ctype = render(session, fmt)
    except Exception as exc:  # a bug must not reach websockets (a traceback per request)
        log.error("report %s of session %s failed: %s", fmt, sid, exc)
        return _response(HTTPStatus.INTERNAL_SERVER_ERROR, b"report failed\n", "text/plain", head)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(session.started))
    name = f"emotion-stream-{stamp}-{sid[:6]}.{fmt}"
    return _response(HTTPStatus.OK, body, ctype, head, name)


def _response(
    status: HTTPStatus, body: bytes, ctype: str, head: bool, filename: str = ""
) -> Response:
    headers = [
        ("Content-Type", ctype),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", REPORT_CSP),
        ("Connection", "close"),
    ]
    if filename:
        headers.append(("Content-Disposition", f'attachment; filename="{filename}"'))
    return Response(status.value, status.phrase, Headers(headers), b"" if head else body)


def save_quietly(session: Any, folder: Path | None) -> None:
    """Write a closed session's reports when `--save-reports` asked for it; log, never raise."""
    if folder is None or not session.analysis.aggregator.faces():
        return
    try:
        for path in save(session, folder):
            print(f"emotion-stream: wrote {path}", flush=True)
    except Exception as exc:  # a full disk must not take the server down
        log.error("could not write the reports of session %s: %s", session.id, exc)
