"""Opening a finished feature cache: layout, validation and the :class:`FeatureCache` view.

A cache directory holds:

- ``<feature>.npy``: one array [N, F, T] per feature (opened with ``np.load(mmap_mode="r")``);
- ``index.csv``: the cached clips in array order (the :class:`ClipIndex` table rows that
  decoded, plus ``row`` and ``padded_seconds``);
- ``manifest.json``: parameters, library versions, counts, shapes, skipped files with
  reasons, build seconds, the rebuild command and ``"complete": true``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.cache_key import CACHE_FORMAT, CacheError, rebuild_command
from datamodules.features import EXTRACTOR_VERSION
from datamodules.index import COLUMNS
from datamodules.publish import partial_path

MANIFEST = "manifest.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("row", *COLUMNS, "padded_seconds")


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
            partial = partial_path(d)
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
