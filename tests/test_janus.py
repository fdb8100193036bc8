"""`emotion-stream join` against a real Janus (Debian's `janus`, VideoRoom + WebSockets): two
aiortc publishers with different clips join a room as "Alice" and "Bob", the bot names both,
then Bob leaves and his tracks end while Alice's go on."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.live.janus import JanusClient, JanusError, JanusRoomBot
from stream.live.session import LiveSession, Subscriber
from stream.live.webrtc import gather_on

from .conftest import VIDEO

ROOM = 4242
ALICE_CLIP = VIDEO / "fer_woman2.mp4"  # 15.5 s, a woman talking to the camera, no audio
BOB_CLIP = VIDEO / "pyfeat_single_face.mp4"  # 2.4 s (looped), a man talking, with audio
LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _media_address() -> str:
    """This machine's first IPv4 address other than loopback: Janus (libnice) never gathers ICE
    candidates on loopback nor answers checks from it, so media meet on this address."""
    import aioice.ice

    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not found:
        pytest.fail("no IPv4 address besides loopback: Janus's ICE cannot use loopback")
    return str(found[0])


def _janus_lib(kind: str, name: str) -> Path:
    """A Janus module from Debian's package (any architecture)."""
    for base in (LIBDIR, *Path("/usr/lib").glob("*/janus")):
        if (base / kind / name).exists():
            return base / kind / name
    pytest.fail(f"janus is installed but {kind}/{name} is missing")


JANUS_LOG: list[str] = []  # the running Janus's log (printed when a test fails)
SEEN: list[dict[str, Any]] = []  # the events of the test running (printed when it fails)


@pytest.fixture(scope="module")
def janus() -> Iterator[str]:
    """A Janus with only the VideoRoom plugin and the WebSocket transport: its API on
    127.0.0.1, ICE on this machine's own address only (see `_media_address`), no STUN, room
    4242 from its config; yields the WebSocket URL."""
    binary = shutil.which("janus")
    if binary is None:
        msg = "the janus binary is missing (apt-get install janus)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs it: missing there is a real failure
        pytest.skip(msg)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="janus-") as tmp:
        d = Path(tmp)
        for sub in ("plugins", "transports", "none"):
            (d / sub).mkdir()
        (d / "plugins" / "libjanus_videoroom.so").symlink_to(
            _janus_lib("plugins", "libjanus_videoroom.so")
        )
        (d / "transports" / "libjanus_websockets.so").symlink_to(
            _janus_lib("transports", "libjanus_websockets.so")
        )
        (d / "janus.jcfg").write_text(
            f"general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{d}/plugins\"\n"
            f" transports_folder = \"{d}/transports\"\n events_folder = \"{d}/none\"\n"
            f" loggers_folder = \"{d}/none\"\n debug_level = 4\n}}\n"
            f"nat: {{\n ice_enforce_list = \"{_media_address()}\"\n ignore_mdns = true\n}}\n"
        )  # fmt: skip
        (d / "janus.transport.websockets.jcfg").write_text(
            f'general: {{\n json = "plain"\n ws = true\n ws_port = {port}\n'
            ' ws_ip = "127.0.0.1"\n wss = false\n}\nadmin: {\n admin_ws = false\n'
            " admin_wss = false\n}\n"
        )
        (d / "janus.plugin.videoroom.jcfg").write_text(
            f'general: {{\n}}\nroom-{ROOM}: {{\n description = "emotion-stream test"\n'
            " publishers = 6\n bitrate = 1000000\n fir_freq = 2\n}\n"
        )
        proc = subprocess.Popen(
            [binary, "-F", str(d), "-C", str(d / "janus.jcfg"), "-o"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = JANUS_LOG
        lines.clear()
        ready = threading.Event()

        def read() -> None:  # drains Janus's log (a full pipe would stall it)
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if "WebSockets thread started" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        t0 = time.perf_counter()
        ok = ready.wait(30) and proc.poll() is None
        if not ok:
            proc.kill()
            pytest.fail("janus did not start:\n" + "\n".join(lines[-30:]))
        print(f"\njanus {port}: ready in {time.perf_counter() - t0:.2f} s")
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


class Sink:
    """Collects a session's events; waits for conditions on them without polling."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stamps: list[float] = []
        self.changed = asyncio.Event()

    async def send(self, msg: str) -> None:
        self.events.append(json.loads(msg))
        self.stamps.append(time.perf_counter())
        self.changed.set()

    async def until(self, cond: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not cond(self.events):
                self.changed.clear()
                await self.changed.wait()


class Publisher:
    """An aiortc participant publishing a looped clip to the room through the VideoRoom API."""

    def __init__(self, url: str, display: str, clip: Path) -> None:
        self.client = JanusClient(url)
        self.display = display
        self.clip = clip
        self.pc: Any = None
        self.player: Any = None
        self.feed = 0

    async def start(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription
        from aiortc.contrib.media import MediaPlayer

        await self.client.connect()
        handle = await self.client.attach()
        body = {"request": "join", "ptype": "publisher", "room": ROOM, "display": self.display}
        data, _ = await self.client.message(handle, body)
        self.feed = int(data["id"])
        self.player = MediaPlayer(str(self.clip), loop=True)
        self.pc = RTCPeerConnection()
        for track in (self.player.video, self.player.audio):
            if track is not None:
                self.pc.addTrack(track)
        with gather_on([_media_address()]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        configure = {"request": "configure", "audio": True, "video": True}
        _, jsep = await self.client.message(handle, configure, offer)
        assert jsep is not None and jsep["type"] == "answer"
        await self.pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "answer"))

    async def leave(self) -> None:
        """Hang up and end the Janus session (Janus tells the room this feed left)."""
        if self.pc is not None:
            await self.pc.close()
        await self.client.close()


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [
        e for e in events if e["type"] == "frame" and any(f["name"] == name for f in e["faces"])
    ]


@pytest.mark.integration
def test_a_named_track_names_its_faces(stages: Stages) -> None:
    """Faces first seen on a named track take its name ("Alice", "Alice 2", ... by number);
    other tracks keep "Face N"; a rename wins; a reset starts the names over."""
    from stream.analysis.stream import StreamAnalysis
    from stream.core.types import VideoFrame
    from stream.offline.media import read_frames

    frames = list(read_frames(VIDEO / "mexca_test_video_multi_5_frames.mp4", 0))  # 4 people
    analysis = StreamAnalysis(stages, 10)
    analysis.name_track("cam", "Alice")

    def play(track: str, rounds: int = 4) -> list[int]:
        for k in range(rounds):
            for f in frames:
                result = analysis.push_video(VideoFrame(f.image, f.t + 0.2 * k), track)
        return sorted(face.number for face in result.faces)

    numbers = play("cam")
    names = [analysis.name_of(n) for n in numbers]
    other = play("other")
    other_names = [analysis.name_of(n) for n in other]
    analysis.rename(numbers[0], "Carol")
    renamed = analysis.name_of(numbers[0])
    analysis.reset()
    again = [analysis.name_of(n) for n in play("cam")]
    print(f"named track: {names}; unnamed track: {other_names}; after reset: {again}")
    assert names == ["Alice", "Alice 2", "Alice 3", "Alice 4"]
    assert other_names == [f"Face {n}" for n in other] and set(other).isdisjoint(numbers)
    assert renamed == "Carol"
    assert again == ["Alice", "Alice 2", "Alice 3", "Alice 4"]


@pytest.mark.integration
def test_bad_room_is_one_line(janus: str, config: Config, stages: Stages) -> None:
    async def main() -> str:
        executor = ThreadPoolExecutor(1)
        session = LiveSession(config, stages, executor, "Janus test")
        bot = JanusRoomBot(config, janus, 999999)
        try:
            await session.attach(bot)
        except JanusError as exc:
            return str(exc)
        finally:
            executor.shutdown()
        return ""

    message = asyncio.run(main())
    print(f"unknown room: {message}")
    assert message.startswith("cannot join room 999999:") and "\n" not in message
    assert "No such room" in message


@pytest.mark.integration
def test_bot_names_every_participant_and_follows_leaves(
    janus: str, config: Config, stages: Stages
) -> None:
    async def main() -> dict[str, Any]:
        executor = ThreadPoolExecutor(1)
        session = LiveSession(config, stages, executor, "Janus test: clips, no people")
        sink = Sink()
        SEEN[:] = []
        sink.events = SEEN
        session.subscribe(Subscriber(sink.send, "viewer", limit=8192))
        alice = Publisher(janus, "Alice", ALICE_CLIP)
        bob = Publisher(janus, "Bob", BOB_CLIP)
        await alice.start()  # Alice is in the room before the bot: in its `joined` list
        bot = JanusRoomBot(
            config, janus, ROOM, "emotion-stream test bot", ice_addresses=[_media_address()]
        )
        t_join = time.perf_counter()
        await session.attach(bot)
        joined_s = time.perf_counter() - t_join
        await bob.start()  # Bob comes after: a `publishers` event
        t_bob = time.perf_counter()
        await sink.until(lambda ev: _named(ev, "Alice"), 60)
        alice_s = sink.stamps[sink.events.index(_named(sink.events, "Alice")[0])] - t_join
        await sink.until(lambda ev: _named(ev, "Bob"), 60)
        bob_s = sink.stamps[sink.events.index(_named(sink.events, "Bob")[0])] - t_bob
        await sink.until(lambda ev: len(_named(ev, "Alice")) >= 10 and len(_named(ev, "Bob")) >= 10,
                         90)  # fmt: skip
        # Bob leaves: Janus tells the room, the bot closes his peer, his tracks end.
        t_leave = time.perf_counter()
        await bob.leave()
        await sink.until(lambda ev: any(e.get("code") == "participant_left" for e in ev), 30)
        noticed_s = time.perf_counter() - t_leave
        bob_p = bot.participants[bob.feed]
        await asyncio.wait_for(bob_p.ended.wait(), 10)
        ended_s = time.perf_counter() - t_leave
        left_at = len(sink.events)
        await sink.until(lambda ev: len(_named(ev[left_at:], "Alice")) >= 10, 60)
        after = sink.events[left_at:]
        await alice.leave()
        summary = await session.close("test done")
        executor.shutdown()
        alice_tracks = bot.participants[alice.feed].tracks
        return {
            "events": sink.events,
            "after": after,
            "joined_s": joined_s,
            "alice_s": alice_s,
            "bob_s": bob_s,
            "noticed_s": noticed_s,
            "ended_s": ended_s,
            "bob_tracks": bob_p.tracks,
            "alice_tracks": alice_tracks,
            "summary": summary,
            "alice_ended": bot.participants[alice.feed].ended.is_set(),
        }

    try:
        r = asyncio.run(main())
    except BaseException:
        print("janus log (tail):\n" + "\n".join(JANUS_LOG[-40:]))
        print("events:", [(e["type"], e.get("code"), e.get("message")) for e in SEEN
                          if e["type"] != "frame"], len(SEEN))  # fmt: skip
        raise
    events = r["events"]
    frames = [e for e in events if e["type"] == "frame"]
    names = {f["name"] for e in frames for f in e["faces"]}
    by_track: dict[str, set[str]] = {}
    for e in frames:
        by_track.setdefault(e["track"], set()).update(f["name"] for f in e["faces"])
    bob_video = next(t for t in r["bob_tracks"] if t.endswith("-video"))
    alice_video = next(t for t in r["alice_tracks"] if t.endswith("-video"))
    prosody = [e for e in events if e["type"] == "prosody"]
    print(
        f"bot joined (subscribed to Alice) in {1e3 * r['joined_s']:.0f} ms; first 'Alice' face "
        f"{r['alice_s']:.2f} s after the join, first 'Bob' face {r['bob_s']:.2f} s after Bob "
        f"published; Bob's leave noticed in {r['noticed_s']:.2f} s, his tracks ended in "
        f"{r['ended_s']:.2f} s; "
        f"{len(frames)} frame events, names {sorted(names)}, tracks {by_track}; "
        f"{len(prosody)} prosody events"
    )
    assert {"Alice", "Bob"} <= names
    assert not any(n.startswith("Face ") for n in names), names
    assert by_track[alice_video] <= {"Alice", "Alice 2"} and "Alice" in by_track[alice_video]
    assert by_track[bob_video] <= {"Bob", "Bob 2"} and "Bob" in by_track[bob_video]
    assert set(r["bob_tracks"]) == {bob_video, bob_video.replace("-video", "-audio")}
    # After the leave, Bob's video has at most the frame being analysed and the one waiting.
    assert sum(e["type"] == "frame" and e["track"] == bob_video for e in r["after"]) <= 2
    assert len(_named(r["after"], "Alice")) >= 10
    assert r["alice_ended"], "closing the session ends Alice's tracks too"
    summary_names = {f["name"] for f in r["summary"]["faces"]}
    assert {"Alice", "Bob"} <= summary_names
    assert prosody, "Bob's audio is analysed as a voice"
    assert events[-1]["type"] == "session.ended"
