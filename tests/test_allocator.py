"""The long-running commands hand free C heap pages back to the system."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from stream.core import allocator


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_trim_returns_freed_heap_pages_pinned_below_a_live_block() -> None:
    """200 MB of 4 KB blocks freed under one block still in use stay resident (glibc only
    trims the top of a heap); a trim hands them back."""
    blocks = [bytearray(4000) for _ in range(50_000)]
    pin = bytearray(4000)  # allocated last: above the freed blocks, keeps them in the heap
    del blocks
    before = _rss_mb()
    assert allocator.trim_allocator()
    after = _rss_mb()
    print(f"RSS {before:.0f} MB -> {after:.0f} MB after malloc_trim")
    assert before - after > 100
    del pin


def test_keep_trimming_runs_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = threading.Semaphore(0)

    def fake_trim() -> int:
        calls.release()
        return 1

    monkeypatch.setattr(allocator, "_malloc_trim", lambda: fake_trim)
    stop = allocator.keep_trimming(0.001)
    assert stop is not None
    assert calls.acquire(timeout=5) and calls.acquire(timeout=5)  # two trims happened
    stop.set()
    monkeypatch.setattr(allocator, "_malloc_trim", lambda: None)
    assert allocator.keep_trimming() is None and not allocator.trim_allocator()
