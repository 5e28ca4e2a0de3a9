"""Index a dataset and build (or reuse) its feature cache from a run config.

``prepare(cfg)`` is the one code path behind ``python -m experiments.prepare`` and
``GenreDataModule.prepare_data``/``setup``: it indexes ``cfg.data`` (files, labels, split,
skipped files with reasons), logs what it found, and builds or opens the feature cache
for ``cfg.features`` under ``cfg.paths.cache_dir``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from datamodules.indexers import build_index

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The dataset's clip index, its open feature cache (None with ``index_only``), and a
    JSON-ready summary (clips per split, skipped files, cache directory, array shapes)."""

    index: object
    cache: object | None
    summary: dict


def rebuild_hint(cfg) -> str:
    """The command that rebuilds this config's cache (shown in cache errors)."""
    return (f"python -m experiments.prepare data={cfg.choices.data} "
            f"data.root={cfg.data.root} paths.cache_dir={cfg.paths.cache_dir}")


def feature_params(cfg):
    from datamodules.features import FeatureParams

    return FeatureParams.from_dict({**cfg.features, "sample_rate": cfg.data.sample_rate})


def audio_params(cfg) -> dict:
    return {k: cfg.data[k] for k in ("sample_rate", "clip_seconds", "min_seconds", "silence_db")}


def prepare(cfg, progress: bool = True, index_only: bool = False, index=None) -> Prepared:
    """Index + cache (see the module docstring); ``index``: one already built for ``cfg``;
    ``progress``: log the index report and show the cache build's progress."""
    t0 = time.perf_counter()
    index = build_index(cfg.data) if index is None else index
    summary = index.summary()
    if progress:
        report_index(summary)
    cache = None
    if not index_only:
        from datamodules.cache import build_or_load

        cache = build_or_load(index, feature_params(cfg), audio_params(cfg),
                              cfg.paths.cache_dir, workers=int(cfg.cache.workers),
                              dtype=str(cfg.cache.dtype), rebuild_hint=rebuild_hint(cfg),
                              progress=progress, timeout_s=float(cfg.cache.timeout_min) * 60)
        cached = index.table[index.table["clip_id"].isin(set(cache.index["clip_id"]))]
        summary.update({
            "clips": int(len(cached)),
            "per_split": {**{s: 0 for s in ("train", "valid", "test")},
                          **{k: int(v) for k, v in cached["split"].value_counts().items()}},
            "skipped": index.skipped + list(cache.skipped),
            "cache_dir": str(cache.dir),
            "cache_built": bool(cache.built),
            "shapes": {k: list(v.shape) for k, v in cache.arrays.items()},
            "dtype": str(cfg.cache.dtype),
            "build_seconds": round(float(cache.build_seconds), 2),
        })
        for s in cache.skipped if progress else ():
            log.info(f"  skipped {s['path']}: {s['reason']}")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return Prepared(index, cache, summary)


def report_index(s: dict) -> None:
    """Log an index summary: clips per split, layout, split report, skipped files."""
    log.info(f"{s['dataset']}: {s['clips']} clips, {len(s['labels'])} labels, split "
             f"{s.get('split')}: " + ", ".join(f"{k} {v}" for k, v in s["per_split"].items()))
    if s.get("layout"):
        log.info(f"  layout: {s['layout']} under {s['root']}; ignored non-audio: "
                 f"{s.get('ignored', {})}")
    rep = s.get("split_report")
    if rep and "missing" in rep:
        log.info(f"  {rep['protocol']}: listed {rep['listed']}, found {rep['found']}, "
                 f"missing {rep['missing']}, in no list: {len(rep['unlisted'])} "
                 f"{rep['unlisted'][:10]}")
    for sk in s["skipped"]:
        log.info(f"  skipped {sk['path']}: {sk['reason']}")
