"""Segments/s of training batches: the device-resident store against the DataLoader.

    python -m benchmarks.loading [--epochs 5] [--workers 0 2] [--batch-size 64]
                                 [--device cpu|cuda] [key=value ...]

Uses the synthetic demo set (generated and cached on first use under paths.*), or the
dataset the config words name. Measured in the same run: the same segments sliced straight
from the memory maps in one process (the floor cost of the copy), the DataLoader over the
memory-mapped cache with 0 and 2 worker processes (``data.store=loader``), and the
device-resident store (``data.store=device``: the split in device memory, random crops cut
there by index, no workers). Reports medians over epochs and ratios to the 2-worker
DataLoader; the last stdout line is a JSON summary.
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
    ap.add_argument("--device", default="cpu", help="where the store lives (cpu or cuda)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. data=gtzan data.root=DIR")
    a = ap.parse_args()

    import torch

    from datamodules.datamodule import GenreDataModule
    from datamodules.device_store import DeviceStore
    from experiments.config import compose

    cfg = compose(["data=synth", *a.overrides, f"data.batch_size={a.batch_size}",
                   "data.store=loader"])
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
    dev = torch.device(a.device)
    t = time.perf_counter()
    store = DeviceStore(ds, dev, a.batch_size, shuffle=True, drop_last=True, seed=0)
    load_s = time.perf_counter() - t

    def store_epoch() -> float:
        t = time.perf_counter()
        seen = 0
        for b in store:
            seen += b["mel"].shape[0]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return seen / (time.perf_counter() - t)

    store_epoch()  # first use: kernels, allocator
    rate = statistics.median(store_epoch() for _ in range(a.epochs))
    rows.append((f"device store on {dev} ({store.nbytes / 2**20:.0f} MiB)", rate, rate / ref))
    result.update({"store_device": str(dev), "store_mib": round(store.nbytes / 2**20, 1),
                   "store_load_s": round(load_s, 2), "segments_per_s_store": round(rate)})
    base = result.get("segments_per_s_2_workers")
    print(f"{'loader':<44}{'segments/s':>12}{'vs reference':>14}{'vs 2 workers':>14}")
    for name, r, ratio in rows:
        vs = f"{r / base:>13.1f}x" if base else f"{'-':>14}"
        print(f"{name:<44}{r:>12,.0f}{ratio:>13.2f}x{vs}")
    print(f"store: {load_s:.2f} s to load the split once")
    if base:
        result["store_vs_2_workers"] = round(rate / base, 1)
        result["target_store_vs_2_workers"] = 10
        result["target_met"] = rate >= 10 * base
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
