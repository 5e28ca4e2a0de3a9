"""Segments/s from the feature cache through GenreDataModule, with 0 and 2 workers.

    python -m benchmarks.loading [--epochs 5] [--workers 0 2] [--batch-size 64]

Uses the synthetic demo set (generated and cached on first use under paths.*). Reference,
measured in the same run: the same segments sliced straight from the memory maps in one
process without a DataLoader (the floor cost of the copy). Reports medians over epochs;
the last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. data=gtzan data.root=DIR")
    a = ap.parse_args()

    from datamodules.datamodule import GenreDataModule
    from experiments.config import compose

    cfg = compose(["data=synth", *a.overrides, f"data.batch_size={a.batch_size}"])
    dm = GenreDataModule(cfg)
    dm.setup("fit")
    ds = dm.datasets["train"]
    n = len(ds)
    log(f"{cfg.data.name}: {n} training segments of {ds.seg} frames, batch {a.batch_size}")

    def reference_epoch() -> float:
        idx = np.random.default_rng(0).permutation(n)
        t = time.perf_counter()
        for i in range(0, n, a.batch_size):
            for j in idx[i:i + a.batch_size]:
                r, s = ds.rows[ds.clip_pos[j]], ds.starts[j]
                for arr in ds.arrays.values():
                    np.array(arr[r, :, s:s + ds.seg], dtype=np.float32)
        return n / (time.perf_counter() - t)

    ref = statistics.median(reference_epoch() for _ in range(a.epochs))
    rows = [("reference: memmap slices, 1 process", ref, 1.0)]
    result = {"benchmark": "loading", "segments": n, "batch_size": a.batch_size,
              "reference_segments_per_s": round(ref)}
    for w in a.workers:
        cfg.data.num_workers = w
        loader = dm._loader("train", True)
        it_rates = []
        for _ in range(a.epochs + (1 if w else 0)):  # workers: first epoch spawns them
            t = time.perf_counter()
            seen = sum(b["mel"].shape[0] for b in loader)
            it_rates.append(seen / (time.perf_counter() - t))
        rate = statistics.median(it_rates[1:] if w else it_rates)
        rows.append((f"GenreDataModule, {w} workers", rate, rate / ref))
        result[f"segments_per_s_{w}_workers"] = round(rate)
    print(f"{'loader':<40}{'segments/s':>12}{'vs reference':>14}")
    for name, rate, ratio in rows:
        print(f"{name:<40}{rate:>12,.0f}{ratio:>13.2f}x")
    result["target_2_workers"] = 5000
    result["target_met"] = result.get("segments_per_s_2_workers", 0) >= 5000
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
