"""Analyse a folder of videos from Python: one DataFrame of every face's timeline, a plot of
one face, and the events of a live session read as they come.

    python docs/examples/analyse_folder.py clips/ --out results/
    python docs/examples/analyse_folder.py a.mp4 b.mp4 --out results/ --server http://host:8080

Needs `pip install 'emotion-stream[pandas]'` and the models (EMOTION_STREAM_MODELS). Without
--server, a local server is started for the live part (`emotion-stream serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

import stream
from stream import client


def analyse(paths: list[str], out: Path) -> list[stream.Analysis]:
    """Every file of `paths`; outputs, index.csv and overview.html go to `out`."""
    done = []
    for item in stream.analyze_many(paths, out=out, voice=False):
        print(f"{item.status:<8} {item.path.name}  {item.row.error}")
        if item.analysis is not None:
            done.append(item.analysis)
    return done


def timeline_frame(analyses: list[stream.Analysis]) -> pd.DataFrame:
    """One row per face per analysed frame, across files."""
    frames = []
    for a in analyses:
        df = a.to_pandas()
        df.insert(0, "file", Path(a.source.path).name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


async def live_events(url: str, clip: Path) -> None:
    """Publish a clip to the server and print its events as they arrive."""
    purpose = "emotion-stream docs example: a recorded test clip"
    async with client.connect(url, clip, purpose=purpose, audio=False) as pub:
        async for event in pub.events():
            if isinstance(event, client.SessionStarted):
                print(f"live: session {pub.session} (viewers: client.view with its token)")
            elif isinstance(event, client.Frame) and event.faces:
                shown = ", ".join(
                    f"{f['name']} {f['label']} {f['confidence']:.2f}"
                    for f in event.faces
                    if not f["excluded"]
                )
                print(f"live: t={event.media_t:5.2f} s  {shown}")
            elif isinstance(event, client.SessionSummary):
                for f in event.faces:
                    dom = f["dominant"]
                    print(f"live summary: {f['name']} {dom['label']} {dom['share']:.0%}")


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    """`emotion-stream serve` on a free port of this machine, until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "stream", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the local server did not start")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="video files, folders or glob patterns")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--server", help="a running live server (default: start one here)")
    args = parser.parse_args()

    analyses = [a for a in analyse(args.paths, args.out) if a.faces]
    if not analyses:
        sys.exit("no faces found in any file")
    df = timeline_frame(analyses)
    print(df[["file", "time_s", "face_id", "label", "confidence"]].head())
    shown = df.groupby(["file", "face_id"])["label"].agg(lambda s: s.value_counts().index[0])
    print("most shown expression per face:\n" + shown.to_string())

    a = max(analyses, key=lambda a: max(f.visible_s for f in a.faces))
    face = max(a.faces, key=lambda f: f.visible_s)
    png = args.out / "face.png"
    a.plot(face.id).savefig(png)
    print(f"plotted {face.name} of {Path(a.source.path).name}: {png}")

    clip = Path(a.source.path)
    if args.server:
        asyncio.run(live_events(args.server, clip))
    else:
        with local_server() as url:
            asyncio.run(live_events(url, clip))


if __name__ == "__main__":
    main()
