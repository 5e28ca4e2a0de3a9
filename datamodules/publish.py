"""Build a directory once, under a file lock, and publish it with an atomic rename.

:func:`build_once` is how the feature cache and the synthetic dataset come into being:

- ``done()`` says whether ``final`` needs no build. It is asked first without the lock (a
  published directory is complete, so readers need none), then again under it;
- ``<final>.lock`` (``filelock.FileLock``, an OS lock that the kernel releases when its
  holder dies, so a lock file left by a killed process blocks nobody) serialises builders:
  the first builds, the others wait, then find ``final`` done and reuse it;
- ``build(staging)`` fills a staging directory beside ``final``, which is then renamed to
  ``final``: a directory named ``final`` is never half-built. With ``resumable=True`` the
  staging directory is ``<final>.partial``, kept when the build fails or is killed so that
  the next build can resume it; otherwise it is a fresh ``.<name>.tmp-<pid>-<hex>``,
  deleted when the build fails (or, after a kill, by the next builder, under the lock);
- with ``replace=True`` an existing ``final`` that ``done()`` rejected is moved aside to
  ``.<name>.old-<hex>`` for the rename, then deleted.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)


class LockTimeout(TimeoutError):
    """Another process held ``lock`` for longer than ``timeout_s`` seconds."""

    def __init__(self, lock: Path, timeout_s: float, final: Path):
        self.lock = lock
        self.timeout_s = timeout_s
        super().__init__(f"timed out after {timeout_s} s waiting for the lock {lock} held by "
                         f"another process building {final}; the lock is released when its "
                         f"holder exits")


class Outcome(NamedTuple):
    built: bool  # True when this call built and published ``final``
    waited_s: float  # time spent waiting for another builder's lock


def lock_path(final: Path) -> Path:
    return Path(str(final) + ".lock")


def partial_path(final: Path) -> Path:
    """The staging directory of a resumable build."""
    return Path(str(final) + ".partial")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a synced temporary file and ``os.replace``: readers see the
    old content or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _acquire(lock, path: Path, final: Path, timeout_s: float | None) -> float:
    """Take ``lock``; returns the seconds spent waiting for another holder."""
    from filelock import Timeout

    t0 = time.perf_counter()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is building %s; waiting for %s", final, path)
        try:
            lock.acquire(timeout=-1 if timeout_s is None else float(timeout_s))
        except Timeout:
            raise LockTimeout(path, timeout_s, final) from None
    return time.perf_counter() - t0


def _remove_leftovers(final: Path) -> None:
    """Hidden temporary and set-aside directories of killed builders (the lock is held)."""
    for pattern in (f".{final.name}.tmp-*", f".{final.name}.old-*"):
        for stale in final.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _publish(staging: Path, final: Path, replace: bool) -> None:
    old = None
    if final.exists():
        if not replace:
            raise FileExistsError(f"{final} already exists; not replacing it")
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_once(final: str | os.PathLike, done: Callable[[], bool],
               build: Callable[[Path], None], *, timeout_s: float | None = None,
               resumable: bool = False, replace: bool = False) -> Outcome:
    """Make sure ``final`` is done, building and publishing it if needed (see the module
    docstring). ``timeout_s``: how long to wait for another builder (None: forever); on
    timeout :class:`LockTimeout` names the lock."""
    from filelock import FileLock

    final = Path(final)
    if done():
        return Outcome(False, 0.0)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(final)
    lock = FileLock(str(path))
    waited = _acquire(lock, path, final, timeout_s)
    try:
        if done():  # another process finished it while we waited
            return Outcome(False, waited)
        _remove_leftovers(final)
        if resumable:
            staging = partial_path(final)
        else:
            staging = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
        try:
            build(staging)
            _publish(staging, final, replace)
        except BaseException:
            if not resumable:
                shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        lock.release()
    return Outcome(True, waited)
