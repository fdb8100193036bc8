"""Files follow head poses ahead (HeadPoseTracker.prepare in a helper thread while facial
actions run): every analysed frame's head pose and behaviour signals are the same as without."""

from __future__ import annotations

import pytest

from stream.analysis.stages import Stages
from stream.offline.media import read_frames

from .conftest import VIDEO


@pytest.mark.integration
def test_following_heads_ahead_gives_the_same_poses(stages: Stages) -> None:
    frames = list(read_frames(VIDEO / "fer_woman2.mp4", 30.0))[:90]
    ahead, inline = stages.vision(), stages.vision()
    assert ahead.overlap and ahead.signals is not None
    inline.overlap = False  # no helper threads: the head tracker follows faces in `update`
    prepared = 0
    flowed = 0
    for k, frame in enumerate(frames):
        detect = k % 3 == 0
        a = ahead.process(frame, detect=detect)
        b = inline.process(frame, detect=detect)
        prepared += len(ahead.signals.head._prepared[2])
        assert [f.number for f in a.faces] == [f.number for f in b.faces]
        for fa, fb in zip(a.faces, b.faces, strict=True):
            assert fa.signals is not None and fb.signals is not None
            assert fa.signals.raw_pose == fb.signals.raw_pose
            assert fa.signals.pose == fb.signals.pose
            assert fa.signals.gaze == fb.signals.gaze
            flowed += fa.signals.raw_pose.source == "flow"
    print(f"\n{len(frames)} frames: {flowed} poses from the flow, {prepared} followed ahead")
    assert flowed >= 60 and prepared >= flowed
