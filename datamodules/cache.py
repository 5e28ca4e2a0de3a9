"""The feature cache: features computed once per (dataset, clips, parameters), memory-mapped.

A cache lives in ``<cache_root>/<dataset>-<12 hex>`` where the hex is a sha256 of the
dataset name, the clip list fingerprint (:meth:`ClipIndex.fingerprint`), the feature
parameters that change outputs (:meth:`FeatureParams.key_dict`), :data:`EXTRACTOR_VERSION`,
the audio parameters (sample_rate, clip_seconds, min_seconds, silence_db) and the storage
dtype. It holds:

- ``<feature>.npy``: one array [N, F, T] per feature (open with ``np.load(mmap_mode="r")``);
- ``index.csv``: the cached clips in array order (the :class:`ClipIndex` table rows that
  decoded, plus ``row`` and ``padded_seconds``);
- ``manifest.json``: parameters, library versions, counts, shapes, skipped files with
  reasons, build seconds, the rebuild command and ``"complete": true``.

Building (:func:`build_or_load`):

- a ``multiprocessing`` pool decodes clips (``load_audio``) in order (``imap``, chunks of
  one, at most ``batch_size + 2*workers`` clips in flight, so memory stays flat); the main
  process batches waves, runs the :class:`FeatureExtractor` and writes rows to the arrays;
- the build happens in ``<dir>.partial/`` with ``progress.json`` (rewritten atomically after
  every batch, once its rows are flushed). Decoded clips are written densely in index order
  (row k = k-th clip that decoded); failures are recorded, and at the end the arrays are
  truncated to the decoded count. Then ``manifest.json`` (with ``complete: true``) is
  written via a temporary file + ``os.replace`` and ``<dir>.partial`` is renamed to
  ``<dir>``: a directory named ``<dir>`` is always complete;
- a killed build leaves only ``<dir>.partial``; the next build resumes it from its
  progress file when the key and array shapes match, otherwise starts over;
- ``filelock.FileLock("<dir>.lock")`` serialises builders: the first builds, the others
  wait, then find the complete cache and reuse it (``built=False``). The lock is an OS
  (flock) lock, released by the kernel when its holder dies.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.audio import AudioDecodeError, load_audio
from datamodules.features import EXTRACTOR_VERSION, FeatureExtractor, FeatureParams
from datamodules.index import COLUMNS, ClipIndex

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
INDEX = "index.csv"
PROGRESS = "progress.json"
AUDIO_DEFAULTS = {"sample_rate": 22050, "clip_seconds": 30.0, "min_seconds": 1.0,
                  "silence_db": -60.0}
INDEX_COLUMNS = ("row", *COLUMNS, "padded_seconds")

# How long to wait for one decoded clip before concluding a worker died or hung.
RESULT_TIMEOUT_S = 600.0

# Test hook: called in the building process after each batch is durably recorded, with
# the number of rows written so far (tests use it to slow a build down or kill it).
_AFTER_BATCH: Callable[[int], None] | None = None


class CacheError(RuntimeError):
    """A feature cache that cannot be used: names the directory, the problem and the fix."""

    def __init__(self, directory: str | os.PathLike, problem: str, rebuild: str = ""):
        self.dir = str(directory)
        self.problem = problem
        self.rebuild = rebuild
        msg = f"feature cache {self.dir}: {problem}"
        if rebuild:
            msg += f"\n  rebuild it with: {rebuild}"
        super().__init__(msg)


# --------------------------------------------------------------------------- keys


def audio_params(audio: Mapping | None, feature_params: FeatureParams | None = None) -> dict:
    """Normalise the decode parameters; unknown keys raise ``ValueError``."""
    audio = dict(audio or {})
    unknown = sorted(set(audio) - set(AUDIO_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown audio parameter(s) {unknown}; valid: {list(AUDIO_DEFAULTS)}")
    a = {**AUDIO_DEFAULTS, **audio}
    if a["clip_seconds"] is None or float(a["clip_seconds"]) <= 0:
        raise ValueError("the feature cache needs a fixed clip length: audio.clip_seconds > 0")
    a = {"sample_rate": int(a["sample_rate"]), "clip_seconds": float(a["clip_seconds"]),
         "min_seconds": float(a["min_seconds"]), "silence_db": float(a["silence_db"])}
    if feature_params is not None and feature_params.sample_rate != a["sample_rate"]:
        raise ValueError(f"feature sample_rate={feature_params.sample_rate} differs from the "
                         f"audio sample_rate={a['sample_rate']}")
    return a


def _dtype_name(dtype) -> str:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"cache dtype must be a float type (float16/float32), got {dtype!r}")
    return dt.name


def cache_key(index: ClipIndex, feature_params, audio: Mapping, dtype="float16") -> dict:
    """Everything that decides the cache's contents (hashed into the directory name)."""
    fp = FeatureParams.from_dict(feature_params)
    return {
        "format": CACHE_FORMAT,
        "dataset": index.dataset,
        "clips_fingerprint": index.fingerprint(),
        "features": fp.key_dict(),
        "extractor_version": EXTRACTOR_VERSION,
        "audio": audio_params(audio, fp),
        "dtype": _dtype_name(dtype),
    }


def _hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def cache_dir_for(index: ClipIndex, feature_params, audio: dict, cache_root,
                  dtype="float16") -> Path:
    """``<cache_root>/<dataset>-<12 hex>`` for these clips and parameters."""
    key = cache_key(index, feature_params, audio, dtype)
    return Path(cache_root).expanduser().absolute() / f"{index.dataset}-{_hash(key)}"


def rebuild_command(directory, dataset: str, rebuild_hint: str = "") -> str:
    rm = f"rm -rf {shlex.quote(str(directory))}"
    if rebuild_hint.strip().startswith("rm "):
        return rebuild_hint.strip()
    cmd = rebuild_hint.strip() or f"python -m experiments.prepare data={dataset}"
    return f"{rm} && {cmd}"


# --------------------------------------------------------------------------- loading


class FeatureCache:
    """A complete, validated cache.

    ``dir``; ``manifest`` (dict); ``index`` (DataFrame in array order); ``arrays``
    ({name: read-only np.memmap [N, F, T]}); ``skipped`` ([{path, reason}]); ``built``
    (True when this call built it, False when reused); ``build_seconds``.
    """

    def __init__(self, directory: Path, manifest: dict, index: pd.DataFrame,
                 arrays: dict[str, np.ndarray], built: bool = False):
        self.dir = Path(directory)
        self.manifest = manifest
        self.index = index
        self.arrays = arrays
        self.built = built
        self.waited_seconds = 0.0  # time spent waiting for another process's build

    @property
    def skipped(self) -> list[dict]:
        return [{"path": s["path"], "reason": s["reason"]} for s in self.manifest["skipped"]]

    @property
    def build_seconds(self) -> float:
        return float(self.manifest.get("build_seconds", 0.0))

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def shapes(self) -> dict[str, tuple[int, int]]:
        """{name: (F, T)} per clip."""
        return {n: tuple(a.shape[1:]) for n, a in self.arrays.items()}

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.dir)!r}, clips={len(self)}, "
                f"features={ {n: a.shape for n, a in self.arrays.items()} }, built={self.built})")

    @classmethod
    def open(cls, directory, rebuild_hint: str = "") -> FeatureCache:
        """Open and validate a cache; raises :class:`CacheError` with the rebuild command."""
        d = Path(directory)
        dataset = d.name.rsplit("-", 1)[0]
        hint = rebuild_command(d, dataset, rebuild_hint) if rebuild_hint else ""

        def fail(problem: str, manifest: dict | None = None):
            # the manifest's command, for this directory (the cache may have been moved)
            cmd = hint or rebuild_command(d, (manifest or {}).get("dataset", dataset),
                                          str((manifest or {}).get("rebuild_hint", "")))
            raise CacheError(d, problem, cmd)

        if not d.is_dir():
            partial = Path(str(d) + ".partial")
            extra = (f" (an unfinished build is in {partial}; build_or_load resumes it)"
                     if partial.is_dir() else "")
            fail("does not exist" + extra)
        mpath = d / MANIFEST
        if not mpath.is_file():
            fail(f"{MANIFEST} is missing (not a finished cache)")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            fail(f"{MANIFEST} is unreadable ({e})")
        if not isinstance(manifest, dict) or manifest.get("complete") is not True:
            fail(f'{MANIFEST} lacks "complete": true (an unfinished or interrupted build)',
                 manifest if isinstance(manifest, dict) else None)
        if manifest.get("format") != CACHE_FORMAT:
            fail(f"cache format {manifest.get('format')} != {CACHE_FORMAT} (this code)", manifest)
        if manifest.get("extractor_version") != EXTRACTOR_VERSION:
            fail(f"built by feature extractor version {manifest.get('extractor_version')}, "
                 f"this code is version {EXTRACTOR_VERSION}", manifest)
        try:
            n = int(manifest["clips"])
            feats = dict(manifest["features"])
            _ = list(manifest["skipped"])
        except (KeyError, TypeError, ValueError) as e:
            fail(f"{MANIFEST} lacks or garbles field {e}", manifest)
        arrays = {}
        for name, info in feats.items():
            path = d / info["file"]
            if not path.is_file():
                fail(f"feature array {info['file']} is missing", manifest)
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError, EOFError) as e:
                fail(f"feature array {info['file']} is unreadable or truncated ({e})", manifest)
            want = tuple(info["shape"])
            if tuple(arr.shape) != want or arr.shape[0] != n:
                fail(f"feature array {info['file']} has shape {tuple(arr.shape)}, the manifest "
                     f"says {want} with {n} clips", manifest)
            if arr.dtype != np.dtype(info["dtype"]):
                fail(f"feature array {info['file']} has dtype {arr.dtype}, the manifest says "
                     f"{info['dtype']}", manifest)
            arrays[name] = arr
        ipath = d / INDEX
        if not ipath.is_file():
            fail(f"{INDEX} is missing", manifest)
        try:
            index = read_index_csv(ipath)
        except (OSError, ValueError, pd.errors.ParserError) as e:
            fail(f"{INDEX} is unreadable ({e})", manifest)
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            fail(f"{INDEX} lacks columns {missing}", manifest)
        if len(index) != n:
            fail(f"{INDEX} has {len(index)} rows, the arrays and manifest have {n} clips",
                 manifest)
        if not (index["row"].to_numpy() == np.arange(n)).all():
            fail(f"{INDEX} rows are not in array order 0..{n - 1}", manifest)
        return cls(d, manifest, index, arrays, built=False)


def load_cache(directory, rebuild_hint: str = "") -> FeatureCache:
    return FeatureCache.open(directory, rebuild_hint=rebuild_hint)


def read_index_csv(path) -> pd.DataFrame:
    str_cols = {c: str for c in ("clip_id", "path", "genre", "split", "artist")}
    return pd.read_csv(path, dtype=str_cols, keep_default_na=False)


# --------------------------------------------------------------------------- building


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int, int]:
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


def _truncate_npy(path: Path, rows: int) -> None:
    """Shrink a C-ordered .npy file in place to its first ``rows`` rows (header kept the
    same length, padded with spaces as numpy does)."""
    shape, dtype, end, prefix = _npy_header(path)
    new_shape = (rows, *shape[1:])
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": new_shape}
    text = "{" + "".join(f"'{k}': {v!r}, " for k, v in sorted(d.items())) + "}"
    room = end - prefix
    if len(text) + 1 > room:
        raise ValueError(f"cannot rewrite header of {path}")
    header = (text + " " * (room - len(text) - 1) + "\n").encode("latin1")
    with open(path, "r+b") as f:
        f.seek(prefix)
        f.write(header)
        f.truncate(end + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        f.flush()
        os.fsync(f.fileno())


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


def _mp_context():
    # fork: cheap workers, no re-import of torch; the workers only decode (numpy, soundfile,
    # single-threaded torch resampling), which is fork-safe.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else None)


def _library_versions() -> dict:
    import librosa
    import soundfile
    import torch
    import torchaudio

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "torchaudio": torchaudio.__version__, "librosa": librosa.__version__,
            "numpy": np.__version__, "pandas": pd.__version__,
            "soundfile": soundfile.__version__,
            "libsndfile": getattr(soundfile, "__libsndfile_version__", "")}


def _load_progress(partial: Path, key: dict, files: dict[str, Path],
                   shapes: dict[str, tuple], n_total: int, dtype: str) -> dict | None:
    """The resumable state of ``partial``, or None when it does not match."""
    try:
        state = json.loads((partial / PROGRESS).read_text())
        if state.get("key") != key:
            log.warning("%s was started with other parameters; starting over", partial)
            return None
        nxt, rows, padded = int(state["next"]), list(state["rows"]), list(state["padded"])
        failed = list(state["failed"])
        if not (0 <= nxt <= n_total and len(rows) == len(padded)
                and all(0 <= r < nxt for r in rows) and rows == sorted(set(rows))
                and all(0 <= f["pos"] < nxt for f in failed)):
            raise ValueError("inconsistent progress record")
        for name, path in files.items():
            shape, dt, _, _ = _npy_header(path)
            if shape != (n_total, *shapes[name]) or dt != np.dtype(dtype):
                raise ValueError(f"{path.name} has shape {shape} {dt}")
            if path.stat().st_size < _npy_header(path)[2] + np.prod(shape) * dt.itemsize:
                raise ValueError(f"{path.name} is shorter than its header says")
        return state
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cannot resume %s (%s); starting over", partial, e)
        return None


def _write_rows(files: dict[str, Path], start: int, feats: dict, dtype: str) -> None:
    for name, path in files.items():
        arr = feats[name].cpu().numpy()
        out = arr.astype(dtype, copy=False)
        if not np.isfinite(out).all():
            bad = "overflows " + dtype if np.isfinite(arr).all() else "is not finite"
            raise ValueError(f"feature {name!r} {bad}; use dtype=float32 or check the input")
        # Map, write, flush, unmap per batch: written pages do not stay in this process's
        # resident set, so memory stays flat however large the array grows.
        mm = np.load(path, mmap_mode="r+")
        mm[start:start + len(out)] = out
        mm.flush()
        del mm


def _build(index: ClipIndex, fp: FeatureParams, audio: dict, dtype: str, final: Path,
           workers: int, rebuild_hint: str, progress: bool) -> FeatureCache:
    from tqdm import tqdm

    rebuild = rebuild_command(final, index.dataset, rebuild_hint)

    t_start = time.perf_counter()
    key = cache_key(index, fp, audio, dtype)
    partial = Path(str(final) + ".partial")
    table = index.table
    n_total = len(table)
    extractor = FeatureExtractor(fp)
    n_samples = int(round(audio["clip_seconds"] * audio["sample_rate"]))
    shapes = extractor.shapes(n_samples)
    files = {name: partial / f"{name}.npy" for name in extractor.names}

    if (partial / MANIFEST).is_file() and not (partial / PROGRESS).is_file():
        # killed between writing the manifest and the rename: finish the rename
        try:
            done = FeatureCache.open(partial, rebuild_hint=rebuild)
            if done.manifest.get("key_hash") == _hash(key):
                os.rename(partial, final)
                log.info("completed the interrupted rename %s -> %s", partial, final)
                cache = FeatureCache.open(final, rebuild_hint=rebuild)
                cache.built = True
                return cache
        except CacheError as e:
            log.warning("discarding %s: %s", partial, e.problem)
    state = _load_progress(partial, key, files, shapes, n_total, dtype) \
        if (partial / PROGRESS).is_file() else None
    if state is None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        for name, path in files.items():
            # a sparse file of the full size; rows are written as they come
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                           shape=(n_total, *shapes[name]))
            mm.flush()
            del mm
        state = {"key": key, "next": 0, "rows": [], "padded": [], "failed": [],
                 "elapsed": 0.0, "resumed_from": None}
        _atomic_write_text(partial / PROGRESS, json.dumps(state))
    else:
        state["resumed_from"] = state["next"]
        log.info("resuming %s at clip %d/%d (%d rows written)", partial, state["next"],
                 n_total, len(state["rows"]))
    elapsed0 = float(state.get("elapsed", 0.0))
    rows, padded, failed = state["rows"], state["padded"], state["failed"]

    def save(next_pos: int):
        state.update(next=next_pos, elapsed=elapsed0 + time.perf_counter() - t_start)
        _atomic_write_text(partial / PROGRESS, json.dumps(state))

    bs = fp.batch_size
    pending: list[tuple[int, np.ndarray, float]] = []

    def flush(next_pos: int):
        if pending:
            waves = np.stack([w for _, w, _ in pending])
            feats = extractor(waves)
            _write_rows(files, len(rows), feats, dtype)
            rows.extend(p for p, _, _ in pending)
            padded.extend(s for _, _, s in pending)
            pending.clear()
        save(next_pos)
        if _AFTER_BATCH is not None:
            _AFTER_BATCH(len(rows))

    paths = table["path"].tolist()
    tasks = ((pos, paths[pos], audio) for pos in range(state["next"], n_total))
    pool = throttle = None
    if workers > 0:
        throttle = _Throttle(tasks, window=bs + 2 * workers)
        pool = _mp_context().Pool(workers, initializer=_worker_init)
        results = pool.imap(_decode_task, throttle, chunksize=1)
    else:
        results = map(_decode_task, tasks)
    extractor.warmup()  # filterbanks (librosa import) while the workers decode
    bar = tqdm(total=n_total, initial=state["next"], unit="clip", file=sys.stderr,
               disable=not progress, desc=f"features {index.dataset}", dynamic_ncols=True)
    try:
        for expected in range(state["next"], n_total):
            try:
                pos, wave, pad_s, reason = (results.next(timeout=RESULT_TIMEOUT_S)
                                            if pool is not None else next(results))
            except mp.TimeoutError:
                raise CacheError(final, f"no decoded clip came back from the worker pool in "
                                 f"{RESULT_TIMEOUT_S:.0f} s (a worker died or hung near "
                                 f"{paths[expected]}); "
                                 f"rerun to resume, or use workers=0", rebuild) from None
            if throttle is not None:
                throttle.release()
            if reason is not None:
                failed.append({"pos": pos, "path": paths[pos], "reason": reason})
                log.warning("skipping %s: %s", paths[pos], reason)
            else:
                pending.append((pos, wave, pad_s))
            if len(pending) >= bs:
                flush(pos + 1)
            bar.update(1)
        flush(n_total)
    finally:
        bar.close()
        if pool is not None:
            throttle.stop.set()
            pool.terminate()
            pool.join()

    n = len(rows)
    skipped = sorted(failed, key=lambda f: f["pos"])
    if n == 0:
        shutil.rmtree(partial, ignore_errors=True)
        eg = "; ".join(f"{f['path']}: {f['reason']}" for f in skipped[:3])
        raise CacheError(final, f"none of the {n_total} clips decoded (e.g. {eg})", rebuild)
    for path in files.values():
        _truncate_npy(path, n)
    idx = table.iloc[rows].reset_index(drop=True)
    idx.insert(0, "row", np.arange(n))
    idx["padded_seconds"] = padded
    _atomic_write_text(partial / INDEX, idx.to_csv(index=False))
    build_seconds = elapsed0 + time.perf_counter() - t_start
    manifest = {
        "complete": True,
        "format": CACHE_FORMAT,
        "dataset": index.dataset,
        "key_hash": _hash(key),
        "clips_fingerprint": key["clips_fingerprint"],
        "extractor_version": EXTRACTOR_VERSION,
        "feature_params": fp.key_dict(),
        "audio": audio,
        "dtype": dtype,
        "labels": list(index.labels),
        "clips": n,
        "clips_indexed": n_total,
        "per_split": {str(k): int(v) for k, v in idx["split"].value_counts().items()},
        "features": {name: {"file": f"{name}.npy", "shape": [n, *shapes[name]],
                            "dtype": dtype} for name in extractor.names},
        "skipped": [{"path": f["path"], "reason": f["reason"]} for f in skipped],
        "versions": _library_versions(),
        "build_seconds": round(build_seconds, 3),
        "resumed_from_clip": state.get("resumed_from"),
        "workers": workers,
        "device": fp.device,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "built_by": {"host": socket.gethostname(), "pid": os.getpid(), "argv": sys.argv},
        "rebuild_command": rebuild,
        "rebuild_hint": rebuild.split(" && ", 1)[-1],
    }
    _atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    (partial / PROGRESS).unlink()
    os.rename(partial, final)
    log.info("built %s: %d clips, %d skipped, %.1f s", final, n, len(skipped), build_seconds)
    cache = FeatureCache.open(final, rebuild_hint="")
    cache.built = True
    return cache


def _refresh_index(cache: FeatureCache, index: ClipIndex) -> FeatureCache:
    """Split/artist/genre columns come from the caller's index (the cache key covers clip
    ids, paths and labels only, so a new split protocol reuses the cache)."""
    cur = index.table.set_index("clip_id")
    ids = cache.index["clip_id"]
    if ids.isin(cur.index).all():
        for col in ("split", "artist", "genre"):
            cache.index[col] = ids.map(cur[col]).to_numpy()
    return cache


def build_or_load(index: ClipIndex, feature_params, audio: dict, cache_root, workers: int = 2,
                  dtype="float16", rebuild_hint: str = "", progress: bool = True,
                  timeout_s: float | None = None) -> FeatureCache:
    """Return the complete cache for these clips and parameters, building it if needed.

    ``rebuild_hint``: the command that rebuilds this cache (e.g. ``python -m
    experiments.prepare data=gtzan data.root=...``); it goes into the manifest and error
    messages, prefixed with ``rm -rf DIR &&``. ``timeout_s``: how long to wait for another
    process's build (None = forever); on timeout a :class:`CacheError` says who to wait for.
    """
    from filelock import FileLock, Timeout

    fp = FeatureParams.from_dict(feature_params)
    audio = audio_params(audio, fp)
    dtype = _dtype_name(dtype)
    final = cache_dir_for(index, fp, audio, cache_root, dtype)
    rebuild = rebuild_command(final, index.dataset, rebuild_hint)
    if final.exists():  # renamed into place only when complete: no lock needed
        return _refresh_index(FeatureCache.open(final, rebuild_hint=rebuild), index)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(str(final) + ".lock")
    lock = FileLock(str(lock_path), timeout=-1 if timeout_s is None else float(timeout_s))
    t0 = time.perf_counter()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is building %s; waiting for %s", final, lock_path)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(
                final, f"timed out after {timeout_s} s waiting for the lock {lock_path} held by "
                f"another process building this cache (a DDP rank or another job). Wait for it, "
                f"or raise the timeout; the lock is released when its holder exits",
                rebuild) from None
    waited = time.perf_counter() - t0
    try:
        if final.exists():
            cache = FeatureCache.open(final, rebuild_hint=rebuild)
        else:
            cache = _build(index, fp, audio, dtype, final, max(0, int(workers)), rebuild_hint,
                           progress)
    finally:
        lock.release()
    cache.waited_seconds = waited
    return _refresh_index(cache, index)


__all__ = ["CacheError", "FeatureCache", "build_or_load", "cache_dir_for", "cache_key",
           "load_cache", "audio_params", "rebuild_command", "CACHE_FORMAT"]
