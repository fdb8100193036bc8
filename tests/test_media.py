"""Media reading: containers, codecs, variable frame rate, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.core.errors import MediaError
from stream.offline.analyze import analyze_file
from stream.offline.media import probe, read_frames

from .conftest import MEDIA, VIDEO


@pytest.mark.integration
def test_hevc_vfr_clip_decodes_with_media_timestamps() -> None:
    path = VIDEO / "pyfeat_noface_face.mov"
    info = probe(path)
    assert info.codec == "hevc" and info.duration == pytest.approx(6.38, abs=0.05)
    everything = list(read_frames(path, 0))
    assert len(everything) == 169
    gaps = np.diff([f.t for f in everything])
    assert gaps.min() > 0 and gaps.max() > 2 * gaps.min()  # really variable frame rate
    sampled = [f.t for f in read_frames(path, 10)]
    assert abs(len(sampled) - info.duration * 10) <= 3
    # Frames are picked on a 0.1 s grid of media time: the first frame at or after each target.
    assert np.diff(sampled).mean() == pytest.approx(0.1, abs=0.01)
    assert np.diff(sampled).min() > 0.05 and np.diff(sampled).max() < 0.2


@pytest.mark.integration
def test_no_face_then_face_in_vfr_hevc(config: Config, stages: Stages) -> None:
    result = analyze_file(VIDEO / "pyfeat_noface_face.mov", config, stages=stages)
    assert len(result.faces) == 1
    assert result.faces[0].first_seen > 1.0  # the title sequence comes first


@pytest.mark.integration
@pytest.mark.parametrize("clip", ["pyfeat_no_face.mp4"])
def test_no_face_clip_gives_zero_faces(config: Config, stages: Stages, clip: str) -> None:
    result = analyze_file(VIDEO / clip, config, stages=stages)
    assert result.frames > 30 and result.faces == [] and result.overall.faces == 0


@pytest.mark.integration
def test_four_face_clip_gives_four_ids(config: Config, stages: Stages) -> None:
    result = analyze_file(VIDEO / "mexca_test_video_multi_5_frames.mp4", config, stages=stages)
    assert [f.number for f in result.faces] == [1, 2, 3, 4]
    all_frames = analyze_file(
        VIDEO / "mexca_test_video_multi_5_frames.mp4", config, stages=stages, fps=25
    )
    assert [f.number for f in all_frames.faces] == [1, 2, 3, 4]
    assert all(f.samples == 4 for f in all_frames.faces)  # confirmed on frame 2 of 5, then kept


def _faststart_copy(src: Path, dst: Path) -> None:
    """Remux so the index (moov) comes first, like a streamed download."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = s
            o.mux(pkt)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    clip = (VIDEO / "fer_woman2.mp4").read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    (d / "cut_index.mp4").write_bytes(clip[: len(clip) // 2])  # moov at the end: lost
    _faststart_copy(VIDEO / "fer_woman2.mp4", d / "fast.mp4")
    fast = (d / "fast.mp4").read_bytes()
    (d / "cut_data.mp4").write_bytes(fast[: len(fast) // 2])  # index intact, data cut
    (d / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 8)
    (d / "folder.mp4").mkdir()
    return {p.name: p for p in d.iterdir()} | {"missing.mp4": d / "missing.mp4"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.mp4", "file not found"),
        ("empty.mp4", "file is empty"),
        ("folder.mp4", "is a folder"),
        ("text.mp4", "not a"),
        ("cut_index.mp4", "truncated"),
        ("garbage.jpg", "not an image"),
    ],
)
def test_unreadable_inputs_raise_one_clear_error(
    bad_inputs: dict[str, Path], name: str, message: str
) -> None:
    with pytest.raises(MediaError, match=message):
        list(read_frames(bad_inputs[name], 10))


@pytest.mark.integration
def test_audio_only_file_is_audio() -> None:
    info = probe(MEDIA / "audio" / "pyannote_sample.wav")
    assert info.kind == "audio" and info.has_audio and info.width == 0
    assert abs(info.duration - 30.0) < 0.5


@pytest.mark.integration
def test_truncated_data_keeps_what_was_decoded(
    bad_inputs: dict[str, Path], config: Config, stages: Stages
) -> None:
    result = analyze_file(bad_inputs["cut_data.mp4"], config, stages=stages)
    assert "truncated" in result.error or "ends early" in result.error
    assert result.frames > 10 and len(result.faces) == 1  # the part before the cut is kept
    assert result.to_dict()["analysis"]["complete"] is False


def _bomb_png(path: Path, side: int) -> Path:
    """A side x side black PNG (1-bit grey) of a few hundred KB: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("suffix", [".png", ".mp4"])
def test_pixel_bomb_is_refused_before_decoding(tmp_path: Path, suffix: str) -> None:
    """A 20000x20000 PNG (431 KB) once took 2.46 GB and 19 s; as .mp4 ffmpeg would decode it."""
    import time

    bomb = _bomb_png(tmp_path / f"bomb{suffix}", 20000)
    before, t0 = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(MediaError, match=r"20000x20000 px \(400 MP\), above the limit of 50 MP"):
        list(read_frames(bomb, 10))
    took, grew = time.perf_counter() - t0, _peak_rss_mb() - before
    print(f"\n{suffix} bomb: refused in {took:.2f} s, peak RSS +{grew:.0f} MB")
    assert took < 2.0 and grew < 200
    # Below a (configurable) limit the same header is read as usual.
    small = _bomb_png(tmp_path / "small.png", 300)
    assert probe(small, max_pixels=300 * 300).width == 300
    with pytest.raises(MediaError, match="above the limit of 0 MP"):
        probe(small, max_pixels=300 * 300 - 1)


def test_image_header_sizes(tmp_path: Path) -> None:
    """The pixel limit reads sizes from headers: each format agrees with the decoder."""
    import cv2

    from stream.offline.media import image_size

    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm"):
        p = tmp_path / f"x{ext}"
        assert cv2.imwrite(str(p), img), ext
        assert image_size(p, p.read_bytes()) == (53, 37), ext


def test_not_regular_files_say_what_they_are(tmp_path: Path) -> None:
    """/dev/urandom is a device, a FIFO a pipe, a symlink loop a loop (not "empty"/"not found")."""
    import os

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(tmp_path / "loop.mp4")
    dangling = tmp_path / "dangling.mp4"
    dangling.symlink_to(tmp_path / "nowhere.mp4")
    cases = {
        Path("/dev/urandom"): "is a device, not a media file",
        fifo: r"is a pipe \(FIFO\)",
        loop: "symbolic link loop",
        dangling: "broken symbolic link",
    }
    for path, message in cases.items():
        with pytest.raises(MediaError, match=message):
            probe(path)  # returns at once: nothing is read from the device or the pipe
