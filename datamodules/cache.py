"""The feature cache: features computed once per (dataset, clips, parameters), memory-mapped.

A cache lives in ``<cache_root>/<dataset>-<12 hex>``, the hex naming everything that
decides its contents (:mod:`datamodules.cache_key`). It holds one ``<feature>.npy`` array
[N, F, T] per feature, ``index.csv`` (the clips in array order) and ``manifest.json``
(:mod:`datamodules.cache_reader`).

:func:`build_or_load` returns the cache, building it if needed: in ``<dir>.partial``,
resumably (:mod:`datamodules.cache_build`), under the lock ``<dir>.lock`` and renamed to
``<dir>`` once complete (:mod:`datamodules.publish`). A directory named ``<dir>`` is always
complete; a killed build leaves only ``<dir>.partial``, which the next build resumes;
concurrent builders wait for the first one, then reuse its cache (``built=False``).
"""
from __future__ import annotations

from datamodules.cache_build import PROGRESS, build_into
from datamodules.cache_key import (
    AUDIO_DEFAULTS,
    CACHE_FORMAT,
    CacheError,
    audio_params,
    cache_dir_for,
    cache_key,
    dtype_name,
    rebuild_command,
)
from datamodules.cache_reader import (
    INDEX,
    INDEX_COLUMNS,
    MANIFEST,
    FeatureCache,
    load_cache,
    read_index_csv,
)
from datamodules.features import FeatureParams
from datamodules.index import ClipIndex
from datamodules.parallel_decode import RESULT_TIMEOUT_S
from datamodules.publish import LockTimeout, build_once


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
    fp = FeatureParams.from_dict(feature_params)
    audio = audio_params(audio, fp)
    dtype = dtype_name(dtype)
    final = cache_dir_for(index, fp, audio, cache_root, dtype)
    rebuild = rebuild_command(final, index.dataset, rebuild_hint)

    def build(partial):
        build_into(partial, final, index, fp, audio, dtype, max(0, int(workers)),
                   rebuild_hint, progress)

    try:
        outcome = build_once(final, final.exists, build, timeout_s=timeout_s, resumable=True)
    except LockTimeout as e:
        raise CacheError(
            final, f"timed out after {timeout_s} s waiting for the lock {e.lock} held by "
            f"another process building this cache (a DDP rank or another job). Wait for it, "
            f"or raise the timeout; the lock is released when its holder exits",
            rebuild) from None
    cache = FeatureCache.open(final, rebuild_hint=rebuild)
    cache.built = outcome.built
    cache.waited_seconds = outcome.waited_s
    return _refresh_index(cache, index)


__all__ = ["CacheError", "FeatureCache", "build_or_load", "cache_dir_for", "cache_key",
           "load_cache", "audio_params", "rebuild_command", "read_index_csv", "CACHE_FORMAT",
           "AUDIO_DEFAULTS", "MANIFEST", "INDEX", "INDEX_COLUMNS", "PROGRESS",
           "RESULT_TIMEOUT_S"]
