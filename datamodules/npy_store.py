"""C-ordered ``.npy`` arrays on disk, filled row by row through short-lived memory maps."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def create(path: Path, shape: tuple, dtype: str) -> None:
    """A (sparse) file of the full size; rows are written as they come."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    mm.flush()
    del mm


def header(path: Path) -> tuple[tuple, np.dtype, int, int]:
    """(shape, dtype, header length in bytes, header data offset) of a .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            prefix = 10
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            prefix = 12
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered")
        return tuple(shape), dtype, f.tell(), prefix


def check_size(path: Path) -> None:
    """Raise ``ValueError`` when the file is shorter than its header says."""
    shape, dtype, end, _ = header(path)
    if path.stat().st_size < end + np.prod(shape) * dtype.itemsize:
        raise ValueError(f"{path.name} is shorter than its header says")


def write_rows(path: Path, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` at row ``start`` and flush. The map lives for this call only, so
    written pages do not stay in this process's resident set however large the array."""
    mm = np.load(path, mmap_mode="r+")
    mm[start:start + len(rows)] = rows
    mm.flush()
    del mm


def truncate(path: Path, rows: int) -> None:
    """Shrink the file in place to its first ``rows`` rows (header kept the same length,
    padded with spaces as numpy does)."""
    shape, dtype, end, prefix = header(path)
    new_shape = (rows, *shape[1:])
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": new_shape}
    text = "{" + "".join(f"'{k}': {v!r}, " for k, v in sorted(d.items())) + "}"
    room = end - prefix
    if len(text) + 1 > room:
        raise ValueError(f"cannot rewrite header of {path}")
    head = (text + " " * (room - len(text) - 1) + "\n").encode("latin1")
    with open(path, "r+b") as f:
        f.seek(prefix)
        f.write(head)
        f.truncate(end + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        f.flush()
        os.fsync(f.fileno())
