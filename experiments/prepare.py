"""Index a dataset and build its feature cache.

    python -m experiments.prepare data=gtzan data.root=DIR [index_only=true]

Prints what it found to stderr; the last stdout line is a JSON summary with ``dataset``,
``clips``, ``per_split``, ``skipped`` ([{"path", "reason"}]), ``cache_dir``, ``shapes``.
"""
from __future__ import annotations

import sys
import time

from datamodules.datasets import build_index
from experiments.config import log, main_guard, print_summary


def rebuild_hint(cfg) -> str:
    return (f"python -m experiments.prepare data={cfg.choices.data} "
            f"data.root={cfg.data.root} paths.cache_dir={cfg.paths.cache_dir}")


def prepare(cfg, progress: bool = True):
    """Index + cache. Returns (index, cache or None, summary dict)."""
    t0 = time.perf_counter()
    index = build_index(cfg.data)
    summary = index.summary()
    report_index(index)
    cache = None
    if not cfg.get("index_only", False):
        from datamodules.cache import build_or_load
        from datamodules.features import FeatureParams

        params = FeatureParams.from_dict({**cfg.features, "sample_rate": cfg.data.sample_rate})
        audio = {k: cfg.data[k]
                 for k in ("sample_rate", "clip_seconds", "min_seconds", "silence_db")}
        cache = build_or_load(index, params, audio, cfg.paths.cache_dir,
                              workers=int(cfg.cache.workers), dtype=str(cfg.cache.dtype),
                              rebuild_hint=rebuild_hint(cfg), progress=progress,
                              timeout_s=float(cfg.cache.timeout_min) * 60)
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
        for s in cache.skipped:
            log(f"  skipped {s['path']}: {s['reason']}")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return index, cache, summary


def report_index(index) -> None:
    s = index.summary()
    log(f"{s['dataset']}: {s['clips']} clips, {len(s['labels'])} labels, split "
        f"{s.get('split')}: " + ", ".join(f"{k} {v}" for k, v in s["per_split"].items()))
    if s.get("layout"):
        log(f"  layout: {s['layout']} under {s['root']}; ignored non-audio: {s.get('ignored', {})}")
    rep = s.get("split_report")
    if rep and "missing" in rep:
        log(f"  {rep['protocol']}: listed {rep['listed']}, found {rep['found']}, "
            f"missing {rep['missing']}, in no list: {len(rep['unlisted'])} {rep['unlisted'][:10]}")
    for sk in s["skipped"]:
        log(f"  skipped {sk['path']}: {sk['reason']}")


def main(cfg) -> int:
    _, _, summary = prepare(cfg)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main, extra={"index_only": False}))
