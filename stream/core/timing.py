"""Media-time helpers shared by every source."""

from __future__ import annotations

import math


class FrameGrid:
    """Picks frames on a grid of `1 / fps` seconds of media time.

    A frame is taken when it reaches the next grid point (within 1 ms); after a gap the grid
    restarts at the frame, so variable frame rate and dropped stretches never cause bursts.
    `fps <= 0` takes every frame.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next_t = -math.inf

    def take(self, t: float) -> bool:
        """Whether the frame at media time `t` is on the grid (and advance the grid if so)."""
        if self.period and t < self.next_t - 1e-3:
            return False
        if self.next_t == -math.inf:
            self.next_t = t + self.period
        else:
            self.next_t = max(self.next_t + self.period, t)
        return True
