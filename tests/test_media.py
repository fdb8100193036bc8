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


def test_no_face_then_face_in_vfr_hevc(config: Config, stages: Stages) -> None:
    result = analyze_file(VIDEO / "pyfeat_noface_face.mov", config, stages=stages)
    assert len(result.faces) == 1
    assert result.faces[0].first_seen > 1.0  # the title sequence comes first


@pytest.mark.parametrize("clip", ["pyfeat_no_face.mp4"])
def test_no_face_clip_gives_zero_faces(config: Config, stages: Stages, clip: str) -> None:
    result = analyze_file(VIDEO / clip, config, stages=stages)
    assert result.frames > 30 and result.faces == [] and result.overall.faces == 0


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


def test_audio_only_file_is_audio() -> None:
    info = probe(MEDIA / "audio" / "pyannote_sample.wav")
    assert info.kind == "audio" and info.has_audio and info.width == 0
    assert abs(info.duration - 30.0) < 0.5


def test_truncated_data_keeps_what_was_decoded(
    bad_inputs: dict[str, Path], config: Config, stages: Stages
) -> None:
    result = analyze_file(bad_inputs["cut_data.mp4"], config, stages=stages)
    assert "truncated" in result.error or "ends early" in result.error
    assert result.frames > 10 and len(result.faces) == 1  # the part before the cut is kept
    assert result.to_dict()["analysis"]["complete"] is False
