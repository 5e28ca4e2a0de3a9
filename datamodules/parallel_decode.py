"""Decode clips in worker processes, in order, with a bounded number in flight.

:class:`OrderedDecoder` yields ``(pos, wave, padded_seconds, reason)`` for every clip from
``start`` on (``reason`` is None, or why the clip is unusable). Workers (``Pool.imap``,
chunks of one) decode with :func:`load_audio`; at most ``window`` clips are in flight, so
memory stays flat when the consumer is slower than the decoders.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Iterable, Iterator, Sequence

from datamodules.audio import AudioDecodeError, load_audio
from datamodules.worker_pool import worker_pool

# How long to wait for one decoded clip before concluding a worker died or hung.
RESULT_TIMEOUT_S = 600.0


class DecodeStalled(RuntimeError):
    """No decoded clip came back from the workers within ``timeout_s`` seconds."""

    def __init__(self, path: str, timeout_s: float):
        self.path = path
        self.timeout_s = timeout_s
        super().__init__(f"no decoded clip came back from the worker pool in {timeout_s:.0f} s "
                         f"(a worker died or hung near {path})")


def _decode_task(task):
    pos, path, audio = task
    try:
        dec = load_audio(path, **audio)
        return pos, dec.wave, float(dec.padded_seconds), None
    except AudioDecodeError as e:
        return pos, None, 0.0, e.reason
    except Exception as e:  # noqa: BLE001 - any unusable file is a skip with its reason
        return pos, None, 0.0, f"unexpected {type(e).__name__} while decoding: {e}"


def _worker_init():
    try:
        import torch

        torch.set_num_threads(1)  # resampling in a worker: no oversubscription
    except Exception:  # pragma: no cover
        pass


class _Throttle:
    """An iterable for ``Pool.imap`` that lets at most ``window`` items be in flight.

    ``Pool.imap`` submits every task as fast as its feeder thread can; results then pile
    up in memory when the consumer is slower (here: the STFT). The feeder blocks on a
    semaphore that the consumer releases once per result it takes.
    """

    def __init__(self, items: Iterable, window: int):
        self.items = items
        self.sem = threading.Semaphore(window)
        self.stop = threading.Event()

    def __iter__(self):
        for item in self.items:
            while not self.sem.acquire(timeout=0.2):
                if self.stop.is_set():
                    return
            if self.stop.is_set():
                return
            yield item

    def release(self):
        self.sem.release()


class OrderedDecoder:
    """Iterate over the decoded clips ``paths[start:]`` in order; a context manager that
    stops its workers on exit. ``workers=0`` decodes in this process. The workers start on
    construction, so the caller can prepare other work while the first clips decode."""

    def __init__(self, paths: Sequence[str], audio: dict, start: int = 0, workers: int = 0,
                 window: int = 1, timeout_s: float | None = None):
        self.paths = list(paths)
        self.start = start
        self.timeout_s = RESULT_TIMEOUT_S if timeout_s is None else timeout_s
        tasks = ((pos, self.paths[pos], audio) for pos in range(start, len(self.paths)))
        self._throttle = self._pool = None
        if workers > 0:
            self._throttle = _Throttle(tasks, window=window)
            self._pool = worker_pool(workers, initializer=_worker_init)
            self._results = self._pool.imap(_decode_task, self._throttle, chunksize=1)
        else:
            self._results = map(_decode_task, tasks)

    def __iter__(self) -> Iterator[tuple]:
        for expected in range(self.start, len(self.paths)):
            if self._throttle is None:
                yield next(self._results)
                continue
            try:
                item = self._results.next(timeout=self.timeout_s)
            except mp.TimeoutError:
                raise DecodeStalled(self.paths[expected], self.timeout_s) from None
            self._throttle.release()
            yield item

    def close(self) -> None:
        if self._pool is not None:
            self._throttle.stop.set()
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> OrderedDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
