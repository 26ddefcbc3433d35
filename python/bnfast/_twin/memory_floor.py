"""Twin of the memory-floor family: the benchmark's floor pass (one read of
``src`` and a streaming fill of ``dst``), specified in NumPy."""

from __future__ import annotations

import numpy as np


def memory_floor(src: np.ndarray, dst: np.ndarray, fill: int = 0) -> int:
    """XOR of ``src``'s 64-bit words (native byte order, the last one
    zero-padded); sets every byte of ``dst`` to ``fill``."""
    if not src.flags.c_contiguous:
        raise ValueError("memory_floor: src must be C-contiguous")
    if not dst.flags.c_contiguous:
        raise ValueError("memory_floor: dst must be C-contiguous")
    if not dst.flags.writeable:
        raise ValueError("memory_floor: dst is read-only")
    if not 0 <= fill <= 255:
        raise ValueError("memory_floor: fill must be a byte value, 0 to 255")
    raw = src.reshape(-1).view(np.uint8)
    padded = np.zeros(-(-raw.size // 8) * 8, np.uint8)
    padded[: raw.size] = raw
    checksum = int(np.bitwise_xor.reduce(padded.view(np.uint64))) if padded.size else 0
    dst.reshape(-1).view(np.uint8)[...] = fill
    return checksum
