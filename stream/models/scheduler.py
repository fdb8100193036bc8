"""Dynamic batching: one scheduler per model and device merges concurrent inference calls.

Several streams analysed in parallel threads each call a model with their own faces or frame.
On a GPU one call of 32 faces costs about as much as one call of 1, so the scheduler collects
the calls that arrive within `max_wait_s` of the first (up to `max_batch` rows), runs them as
one batch along axis 0 and hands every caller its own rows. Calls whose other dimensions differ
(e.g. detector inputs of different frame sizes) run in separate batches of the same round.

It wraps an ONNX Runtime session and keeps its interface (`run`, `get_inputs`, ...), so the
stages do not know it is there. With `max_wait_s = 0` it only merges calls that are already
waiting, which costs a single caller nothing but a thread hand-over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Call:
    outputs: list[str] | None
    feeds: dict[str, np.ndarray]
    rows: int
    future: Future[list[np.ndarray]] = field(default_factory=Future)

    def key(self) -> tuple[Any, ...]:
        """Calls with equal keys can share a batch."""
        shapes = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(self.feeds.items()))
        return (tuple(self.outputs) if self.outputs else None, shapes)


@dataclass
class BatchStats:
    """What the scheduler did (for benchmarks and metrics)."""

    calls: int = 0
    batches: int = 0
    rows: int = 0
    max_rows: int = 0

    @property
    def mean_calls_per_batch(self) -> float:
        return self.calls / self.batches if self.batches else 0.0


class BatchingSession:
    """An ONNX Runtime session whose `run` calls from many threads are batched.

    Args:
        session: the wrapped session; every input must have a dynamic first (batch) dimension.
        max_batch: most rows (faces, frames) in one batched run.
        max_wait_s: how long the first call of a batch waits for others (the latency budget).
        name: for logs.
    """

    def __init__(
        self, session: Any, max_batch: int = 32, max_wait_s: float = 0.002, name: str = ""
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.session = session
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._thread.start()

    @staticmethod
    def batchable(session: Any) -> bool:
        """Whether every input of `session` has a dynamic first dimension."""
        inputs = session.get_inputs()
        return bool(inputs) and all(
            len(i.shape) > 0 and not (isinstance(i.shape[0], int) and i.shape[0] > 0)
            for i in inputs
        )

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.session, attr)

    def run(
        self, output_names: list[str] | None, feeds: dict[str, np.ndarray], run_options: Any = None
    ) -> list[np.ndarray]:
        """Like `InferenceSession.run`; blocks until this call's rows are computed."""
        arrays = {k: np.asarray(v) for k, v in feeds.items()}
        rows = {int(v.shape[0]) for v in arrays.values() if v.ndim > 0}
        if run_options is not None or len(rows) != 1:
            return list(self.session.run(output_names, arrays, run_options))
        call = _Call(output_names, arrays, rows.pop())
        self._queue.put(call)
        return call.future.result()

    def close(self) -> None:
        """Stop the scheduler thread (pending calls still run)."""
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            rows = first.rows
            deadline = time.perf_counter() + self.max_wait_s
            while rows < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else (self._queue.get_nowait())
                    )
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this round
                    break
                calls.append(nxt)
                rows += nxt.rows
            groups: dict[tuple[Any, ...], list[_Call]] = {}
            for c in calls:
                groups.setdefault(c.key(), []).append(c)
            for group in groups.values():
                self._run_group(group)

    def _run_group(self, group: list[_Call]) -> None:
        try:
            if len(group) == 1:
                c = group[0]
                outs = list(self.session.run(c.outputs, c.feeds))
                c.future.set_result(outs)
            else:
                feeds = {k: np.concatenate([c.feeds[k] for c in group]) for k in group[0].feeds}
                outs = list(self.session.run(group[0].outputs, feeds))
                start = 0
                for c in group:
                    c.future.set_result([o[start : start + c.rows] for o in outs])
                    start += c.rows
        except Exception as exc:  # every caller of the batch sees the model's error
            for c in group:
                if not c.future.done():
                    c.future.set_exception(exc)
        n = sum(c.rows for c in group)
        self.stats.calls += len(group)
        self.stats.batches += 1
        self.stats.rows += n
        self.stats.max_rows = max(self.stats.max_rows, n)
