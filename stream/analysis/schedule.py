"""Which work a file's analysed frame gets: a fixed schedule in media time.

Files are analysed as fast as the machine allows, so the schedule must not depend on measured
times (results would differ between machines): detection runs at least `detect_fps` times per
second of media (optical flow moves the faces in between), and each face's expression is
computed at most `emotion_fps` times per second (smoothing carries it in between). At or below
those rates every analysed frame gets everything.
"""

from __future__ import annotations


class FixedSchedule:
    """Plans the frames of one video track.

    Args:
        detect_fps: detections per second of media time (0: every frame).
        emotion_fps: expression updates per face per second (0: every frame).
    """

    def __init__(self, detect_fps: float, emotion_fps: float) -> None:
        if detect_fps < 0 or emotion_fps < 0:
            raise ValueError("detect_fps and emotion_fps must be >= 0")
        self.detect_period = 1.0 / detect_fps if detect_fps > 0 else 0.0
        self.emotion_period = 1.0 / emotion_fps if emotion_fps > 0 else 0.0
        self._last_detect = -1e9
        self._last_emotion: dict[int, float] = {}

    def plan(self, t: float, faces: list[int]) -> tuple[bool, set[int] | None]:
        """(run the detector?, faces whose expression to compute; None: all) at media time t."""
        detect = not faces or t - self._last_detect >= self.detect_period - 1e-3
        if detect:
            self._last_detect = t
        if not self.emotion_period:
            return detect, None
        due = {
            n for n in faces if t - self._last_emotion.get(n, -1e9) >= self.emotion_period - 1e-3
        }
        for n in due:
            self._last_emotion[n] = t
        return detect, due
