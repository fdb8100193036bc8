"""Process-wide helper threads, one per kind of work, reused by every pipeline of the process.

A file's pipeline runs parts of each frame beside the main loop (the detector on the next
frame, expressions, head tracking). Each pipeline used to start its own threads, which ended
when it was garbage-collected; every file analysed in one process then left ~12 MB resident
for good (native per-thread state of the model runtime and OpenCV of threads that had ended:
RSS rose 211 -> 234 -> 246 -> 258 MiB over four analyses of the 9-face gallery, and not at
all with the same threads reused). One long-lived worker per kind serves them all; two
pipelines running at once queue their work on it in order, which changes timing only.

After a fork the child has none of the parent's threads, so its helpers start afresh (an
executor copied from the parent would wait forever for a worker that does not exist).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_helpers: dict[str, ThreadPoolExecutor] = {}


def helper(name: str) -> ThreadPoolExecutor:
    """The process's single-thread helper for work of kind `name` (started on first use)."""
    with _lock:
        pool = _helpers.get(name)
        if pool is None:
            pool = _helpers[name] = ThreadPoolExecutor(1, thread_name_prefix=name)
        return pool


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _helpers.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
