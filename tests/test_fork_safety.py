"""A file analysed in a process forked from one whose OpenCV thread pool ran (the Python API's
analyze_many workers) must not hang on OpenCV's thread setting, and the process-wide helper threads
start afresh there."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import cv2
    import numpy as np
    from stream.offline.analyze import opencv_threads

    def child(_):
        with opencv_threads(1):  # what analyze_file does around a file's frames
            cv2.GaussianBlur(np.zeros((500, 500), np.uint8), (5, 5), 0)
        return "ok"

    if __name__ == "__main__":
        cv2.setNumThreads(2)
        img = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8)
        for _ in range(10):
            cv2.GaussianBlur(img, (31, 31), 0)  # the parent's pthread pool now runs
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(pool.map(child, range(4)))
    """
)


def _run(script: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    print(out.stdout, out.stderr[-500:])
    return out


def test_opencv_threads_in_a_forked_child_does_not_hang() -> None:
    # Before the fix the children waited forever in cv2.setNumThreads (CI hung in test_api).
    out = _run(SCRIPT)
    assert out.returncode == 0 and "['ok', 'ok', 'ok', 'ok']" in out.stdout


HELPERS = textwrap.dedent(
    """
    import multiprocessing
    import threading
    from stream.core.helpers import helper

    def child(_):
        # The parent's worker thread does not exist here: a copied executor never ran this.
        return helper("expression").submit(lambda: threading.current_thread().name).result(10)

    if __name__ == "__main__":
        parent = helper("expression")
        assert helper("expression") is parent  # one per kind, reused
        parent.submit(int).result()  # the parent's worker is running
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(pool.map(child, range(4)))
    """
)


def test_helper_threads_work_in_a_forked_child() -> None:
    out = _run(HELPERS)
    assert out.returncode == 0 and out.stdout.count("expression_0") == 4
