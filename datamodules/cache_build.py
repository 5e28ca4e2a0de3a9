"""Building a feature cache into its staging directory, resumably.

:func:`build_into` fills ``<dir>.partial`` (see :mod:`datamodules.publish`, which renames
it to ``<dir>`` afterwards):

- clips are decoded in order by :class:`OrderedDecoder` (``batch_size + 2*workers`` in
  flight); this process batches the waves, runs the :class:`FeatureExtractor` and writes
  the rows into full-size ``.npy`` files. Decoded clips are written densely in index order
  (row k = k-th clip that decoded); failures are recorded with their reasons;
- ``progress.json`` is rewritten atomically after every batch, once its rows are flushed.
  A killed build is resumed from it when the key and array shapes match, otherwise the
  build starts over;
- at the end the arrays are truncated to the decoded count, ``index.csv`` and
  ``manifest.json`` (with ``"complete": true``) are written and ``progress.json`` removed.
  A staging directory with a valid manifest and no progress file was killed just before
  its rename: it is published as it is.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules import npy_store
from datamodules.cache_key import (
    CACHE_FORMAT,
    CacheError,
    cache_key,
    key_hash,
    rebuild_command,
)
from datamodules.cache_reader import INDEX, MANIFEST, FeatureCache
from datamodules.features import EXTRACTOR_VERSION, FeatureExtractor, FeatureParams
from datamodules.index import ClipIndex
from datamodules.parallel_decode import DecodeStalled, OrderedDecoder
from datamodules.publish import atomic_write_text

log = logging.getLogger(__name__)

PROGRESS = "progress.json"

# Test hook: called in the building process after each batch is durably recorded, with
# the number of rows written so far (tests use it to slow a build down or kill it).
_AFTER_BATCH: Callable[[int], None] | None = None


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
            shape, dt, _, _ = npy_store.header(path)
            if shape != (n_total, *shapes[name]) or dt != np.dtype(dtype):
                raise ValueError(f"{path.name} has shape {shape} {dt}")
            npy_store.check_size(path)
        return state
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cannot resume %s (%s); starting over", partial, e)
        return None


def _finished(partial: Path, key: dict, rebuild: str) -> bool:
    """True when ``partial`` is a complete cache for ``key`` that only lacks its rename."""
    if not (partial / MANIFEST).is_file() or (partial / PROGRESS).is_file():
        return False
    try:
        done = FeatureCache.open(partial, rebuild_hint=rebuild)
    except CacheError as e:
        log.warning("discarding %s: %s", partial, e.problem)
        return False
    return done.manifest.get("key_hash") == key_hash(key)


def _write_rows(files: dict[str, Path], start: int, feats: dict, dtype: str) -> None:
    for name, path in files.items():
        arr = feats[name].cpu().numpy()
        out = arr.astype(dtype, copy=False)
        if not np.isfinite(out).all():
            bad = "overflows " + dtype if np.isfinite(arr).all() else "is not finite"
            raise ValueError(f"feature {name!r} {bad}; use dtype=float32 or check the input")
        npy_store.write_rows(path, start, out)


def build_into(partial: Path, final: Path, index: ClipIndex, fp: FeatureParams, audio: dict,
               dtype: str, workers: int, rebuild_hint: str, progress: bool) -> None:
    """Leave a complete cache for ``index`` in ``partial`` (to be renamed to ``final``),
    resuming an interrupted build there when it matches."""
    from tqdm import tqdm

    rebuild = rebuild_command(final, index.dataset, rebuild_hint)
    t_start = time.perf_counter()
    key = cache_key(index, fp, audio, dtype)
    table = index.table
    n_total = len(table)
    extractor = FeatureExtractor(fp)
    n_samples = int(round(audio["clip_seconds"] * audio["sample_rate"]))
    shapes = extractor.shapes(n_samples)
    files = {name: partial / f"{name}.npy" for name in extractor.names}

    if _finished(partial, key, rebuild):
        log.info("completing the interrupted rename %s -> %s", partial, final)
        return
    state = _load_progress(partial, key, files, shapes, n_total, dtype) \
        if (partial / PROGRESS).is_file() else None
    if state is None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        for name, path in files.items():
            npy_store.create(path, (n_total, *shapes[name]), dtype)
        state = {"key": key, "next": 0, "rows": [], "padded": [], "failed": [],
                 "elapsed": 0.0, "resumed_from": None}
        atomic_write_text(partial / PROGRESS, json.dumps(state))
    else:
        state["resumed_from"] = state["next"]
        log.info("resuming %s at clip %d/%d (%d rows written)", partial, state["next"],
                 n_total, len(state["rows"]))
    elapsed0 = float(state.get("elapsed", 0.0))
    rows, padded, failed = state["rows"], state["padded"], state["failed"]

    def save(next_pos: int):
        state.update(next=next_pos, elapsed=elapsed0 + time.perf_counter() - t_start)
        atomic_write_text(partial / PROGRESS, json.dumps(state))

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
    bar = None
    try:
        with OrderedDecoder(paths, audio, start=state["next"], workers=workers,
                            window=bs + 2 * workers) as clips:
            extractor.warmup()  # filterbanks (librosa import) while the workers decode
            bar = tqdm(total=n_total, initial=state["next"], unit="clip", file=sys.stderr,
                       disable=not progress, desc=f"features {index.dataset}",
                       dynamic_ncols=True)
            for pos, wave, pad_s, reason in clips:
                if reason is not None:
                    failed.append({"pos": pos, "path": paths[pos], "reason": reason})
                    log.warning("skipping %s: %s", paths[pos], reason)
                else:
                    pending.append((pos, wave, pad_s))
                if len(pending) >= bs:
                    flush(pos + 1)
                bar.update(1)
            flush(n_total)
    except DecodeStalled as e:
        raise CacheError(final, f"{e}; rerun to resume, or use workers=0", rebuild) from None
    finally:
        if bar is not None:
            bar.close()

    n = len(rows)
    skipped = sorted(failed, key=lambda f: f["pos"])
    if n == 0:
        shutil.rmtree(partial, ignore_errors=True)
        eg = "; ".join(f"{f['path']}: {f['reason']}" for f in skipped[:3])
        raise CacheError(final, f"none of the {n_total} clips decoded (e.g. {eg})", rebuild)
    for path in files.values():
        npy_store.truncate(path, n)
    idx = table.iloc[rows].reset_index(drop=True)
    idx.insert(0, "row", np.arange(n))
    idx["padded_seconds"] = padded
    atomic_write_text(partial / INDEX, idx.to_csv(index=False))
    build_seconds = elapsed0 + time.perf_counter() - t_start
    manifest = {
        "complete": True,
        "format": CACHE_FORMAT,
        "dataset": index.dataset,
        "key_hash": key_hash(key),
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
    atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    (partial / PROGRESS).unlink()
    log.info("built %s: %d clips, %d skipped, %.1f s", final, n, len(skipped), build_seconds)
