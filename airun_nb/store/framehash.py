"""Content hashes of big pandas objects, at the speed of SHA-256 over their bytes.

A step that reads a 100 MB DataFrame from the notebook has it hashed when the run is planned and
again when it ends (to record what the run's own steps did to it).
:func:`pandas.util.hash_pandas_object` takes about a second for that; hashing the columns' raw
bytes takes a tenth of it and still covers every cell, so any change to the frame changes the
hash (nothing is sampled). Small frames keep the row hashes, so their fingerprints stay as they
were; a big frame's hash changed its method once, so a step reading one re-runs once.
"""

from __future__ import annotations

import hashlib
from typing import Any

# From this many bytes of column data on, a pandas object is hashed by the bytes of its columns
# (SHA-256 runs at about 1 GB/s) instead of pandas.util.hash_pandas_object (about 0.1 GB/s).
BIG_FRAME_BYTES = 8 * 1024 * 1024


def shallow_bytes(value: Any) -> int:
    """The bytes a DataFrame, Series or Index holds (object columns count their pointers)."""
    mem = value.memory_usage(deep=False)  # a frame's and a series' include their index
    return int(mem.sum() if hasattr(mem, "sum") else mem)


def digest(value: Any, meta: str) -> str:
    """SHA-256 over every byte of a big frame's columns and index (numpy dtypes by their raw
    bytes, Arrow-backed ones such as pandas' ``str`` by their Arrow buffers, others by
    hash_pandas_object), so any change to any cell changes it. It tells apart
    what compares equal but is stored otherwise (-0.0 and 0.0, NaNs of other bits): such a
    value reads as changed, never the other way round."""
    import numpy as np
    import pandas as pd

    h = hashlib.sha256(b"frame-bytes-1\0" + meta.encode())

    def add(part: Any) -> None:
        if isinstance(part, pd.RangeIndex):
            h.update(repr(("range", part.start, part.stop, part.step)).encode())
            return
        dtype = getattr(part, "dtype", None)
        if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
            data = np.ascontiguousarray(part.to_numpy() if hasattr(part, "to_numpy") else part)
            h.update(repr((len(data), dtype.str)).encode())
            h.update(data.view(np.uint8).data)
        elif not _arrow(h, part):
            h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())

    if isinstance(value, pd.DataFrame):
        for i in range(value.shape[1]):
            add(value.iloc[:, i])
        add(value.index)
    elif isinstance(value, pd.Series):
        add(value)
        add(value.index)
    else:
        add(value)
    return h.hexdigest()[:16]


def _arrow(h: Any, part: Any) -> bool:
    """Hash an Arrow-backed column (pandas' ``str`` and ``[pyarrow]`` dtypes) by its buffers,
    in place: validity bits, offsets and character data, every byte of every chunk. A chunk
    that is a slice of a bigger array is hashed with all of its parent's bytes (its offset and
    length in the header): the same values laid out otherwise read as changed, never the other
    way round. False: not Arrow-backed (the caller hashes it another way)."""
    chunked: Any = getattr(getattr(part, "array", None), "_pa_array", None)
    chunks = getattr(chunked, "chunks", None)
    if chunks is None:
        return False
    h.update(repr(("arrow", len(chunked), str(chunked.type), len(chunks))).encode())
    for chunk in chunks:
        buffers = chunk.buffers()
        h.update(repr((chunk.offset, len(chunk), [b is None for b in buffers])).encode())
        for buf in buffers:
            if buf is not None:
                h.update(repr(buf.size).encode())
                h.update(memoryview(buf))
    return True
