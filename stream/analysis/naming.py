"""Default face names from the track a face was first seen on (a call participant's name)."""

from __future__ import annotations

from stream.vision.pipeline import FrameResult


class TrackNaming:
    """Names the faces first seen on a named track after it: the first one `name`, the next
    ones `name 2`, `name 3`, ... A face that already has a name keeps it."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # track -> name
        self._count: dict[str, int] = {}  # faces named after their track so far
        self._seen: set[int] = set()  # face numbers that have appeared on a named track

    def name_track(self, track: str, name: str) -> None:
        self.names[track] = name

    def name_new_faces(self, track: str, result: FrameResult, names: dict[int, str]) -> None:
        """Give this frame's new faces on `track` their default names (into `names`)."""
        base = self.names.get(track)
        if base is None:
            return
        for f in sorted(result.faces, key=lambda f: f.number):
            if f.number in self._seen:
                continue
            self._seen.add(f.number)
            if f.number in names:
                continue
            k = self._count.get(track, 0) + 1
            self._count[track] = k
            names[f.number] = base if k == 1 else f"{base} {k}"

    def reset(self) -> None:
        """Face numbers restart: count afresh (the tracks keep their names)."""
        self._count.clear()
        self._seen.clear()
