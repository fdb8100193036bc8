"""The C allocator's upkeep for this project's long-running processes (`serve`, `watch`,
`join`), where it keeps resident memory bounded.

glibc keeps freed memory inside its heaps (one arena per allocating thread, up to 8 per core)
and only returns the top of each heap to the system; the live server's frames, decoder buffers
and model tensors, freed by many threads, left its RSS rising in steps of megabytes under load.
`malloc_trim(0)` hands every free page of every arena back (madvise), so a trim every
`TRIM_INTERVAL_S` seconds bounds the RSS to what is really in use, at the cost of a few
milliseconds on a background thread. Fixing the heap parameters instead (a constant mmap
threshold, two arenas) also bounded it but mapped and unmapped every large tensor: 14 times the
page faults and +35% CPU on `analyze`. Not applied when the program is used as a library
(`import stream`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds between trims.
TRIM_INTERVAL_S = 30.0


@functools.cache
def _malloc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)` as a callable, or None where the C library has none (looked up
    once: `find_library` runs ldconfig, and files are trimmed every second)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl or another libc: nothing to trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: int(fn(0))


def trim_allocator() -> bool:
    """Return the C heaps' free pages to the system now; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim()
    return True


def keep_trimming(interval_s: float = TRIM_INTERVAL_S) -> threading.Event | None:
    """Trim the C heaps every `interval_s` seconds on a daemon thread until the returned event
    is set; None (and no thread) where the C library cannot trim."""
    trim = _malloc_trim()
    if trim is None:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval_s):
            trim()

    threading.Thread(target=run, name="malloc-trim", daemon=True).start()
    log.debug("allocator: trimming every %.0f s", interval_s)
    return stop
