"""Cache build throughput and peak memory for N and 4N clips: memory must stay flat.

    python -m benchmarks.cache_build [--n 40] [--repeats 3] [--workers 2] [--seconds 30]

Writes 4N random-tone WAVs (30 s, 22,050 Hz, 16-bit) in a temporary directory, then builds
the feature cache (mel + chroma, float16) of the first N and of all 4N clips, each build in
a fresh child process, alternating sizes within each repeat. The parent samples the child
process tree's RSS (the builder plus its decoding workers) with psutil every 20 ms; the
builder also reports its own ``ru_maxrss``. Reference, same run: a child that only imports
the modules and runs the extractor on one batch (the fixed cost a build cannot avoid).
Reports medians, clips/s and peak_RSS(4N) / peak_RSS(N) (target <= 1.3). The last stdout
line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SR = 22050


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_tones(folder: Path, count: int, seconds: float) -> list[str]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    paths = []
    for i in range(count):
        freqs = rng.uniform(80, 4000, size=3)
        y = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
                for f in freqs)
        y = y + 0.01 * rng.standard_normal(len(t))
        p = folder / f"tone.{i:05d}.wav"
        sf.write(str(p), y.astype(np.float32), SR, subtype="PCM_16")
        paths.append(str(p))
    return paths


# ----------------------------------------------------------------------------- child


def child(args) -> int:
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from datamodules.cache import build_or_load
    from datamodules.features import FeatureExtractor
    from datamodules.index import ClipIndex

    t0 = time.perf_counter()
    out = {"clips": 0, "build_seconds": 0.0}
    if args.import_only:
        ex = FeatureExtractor({"names": ["mel", "chroma"]})
        ex(np.random.default_rng(0).standard_normal((16, int(args.seconds * SR)),
                                                    dtype=np.float32) * 0.1)
    else:
        paths = json.loads(Path(args.files).read_text())
        table = pd.DataFrame({"clip_id": [Path(p).stem for p in paths], "path": paths,
                              "label": 0, "genre": "tone", "split": "train", "artist": ""})
        index = ClipIndex("bench", ["tone"], table)
        cache = build_or_load(index, {"names": ["mel", "chroma"], "batch_size": 16},
                              {"sample_rate": SR, "clip_seconds": args.seconds,
                               "min_seconds": 1.0, "silence_db": -60.0},
                              args.root, workers=args.workers, dtype="float16", progress=False)
        assert cache.built and len(cache) == len(paths), cache
        out.update(clips=len(cache), build_seconds=cache.build_seconds,
                   cache_mb=sum(a.nbytes for a in cache.arrays.values()) / 2**20)
    out.update(seconds=time.perf_counter() - t0,
               self_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               children_maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print(json.dumps(out), flush=True)
    return 0


# ----------------------------------------------------------------------------- parent


def run_child(extra: list[str]) -> dict:
    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cache_build", "--child", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = {"tree": 0, "main": 0}
    done = threading.Event()

    def sample():
        try:
            p = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                main = p.memory_info().rss
                tree = main
                for c in p.children(recursive=True):
                    try:
                        tree += c.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                peak["tree"] = max(peak["tree"], tree)
                peak["main"] = max(peak["main"], main)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(tree_peak_mb=peak["tree"] / 2**20, main_peak_mb=peak["main"] / 2**20)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="small build size; the large one is 4N")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--import-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    sizes = [args.n, 4 * args.n]
    with tempfile.TemporaryDirectory(prefix="mlfi-cache-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = write_tones(tmp / "audio", sizes[-1], args.seconds)
        log(f"wrote {len(paths)} x {args.seconds:g} s WAVs in {time.perf_counter() - t0:.1f} s")
        lists = {}
        for n in sizes:
            lists[n] = tmp / f"files{n}.json"
            lists[n].write_text(json.dumps(paths[:n]))
        results: dict[str, list[dict]] = {"reference": [], **{str(n): [] for n in sizes}}
        load_before = os.getloadavg()[0]
        for r in range(args.repeats):
            results["reference"].append(run_child(["--import-only", "--seconds",
                                                   str(args.seconds)]))
            for n in sizes:
                root = tmp / f"cache-{r}-{n}"
                res = run_child(["--files", str(lists[n]), "--root", str(root), "--workers",
                                 str(args.workers), "--seconds", str(args.seconds)])
                results[str(n)].append(res)
                log(f"  repeat {r + 1}, {n} clips: {n / res['build_seconds']:.1f} clips/s, "
                    f"tree peak {res['tree_peak_mb']:.0f} MiB, main maxrss "
                    f"{res['self_maxrss_mb']:.0f} MiB")
                shutil.rmtree(root, ignore_errors=True)
        load_after = os.getloadavg()[0]

    def med(key: str, field: str) -> float:
        return statistics.median(x[field] for x in results[key])

    print(f"\nFeature cache build: mel + chroma float16, {args.workers} decoding workers, "
          f"{args.seconds:g}-s random-tone WAVs, median of {args.repeats} repeats")
    print(f"load average {load_before:.1f} before / {load_after:.1f} after (shared machine)\n")
    print(f"| {'run':28s} | {'clips':>5s} | {'clips/s':>7s} | {'build s':>7s} | "
          f"{'tree peak RSS MiB':>17s} | {'main maxrss MiB':>15s} |")
    print(f"|{'-' * 30}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 19}|{'-' * 17}|")
    print(f"| {'reference: import + 1 batch':28s} | {16:5d} | {'-':>7s} | {'-':>7s} | "
          f"{med('reference', 'tree_peak_mb'):17.0f} | "
          f"{med('reference', 'self_maxrss_mb'):15.0f} |")
    cps = {}
    for n in sizes:
        cps[n] = statistics.median(n / x["build_seconds"] for x in results[str(n)])
        print(f"| {'build ' + str(n) + ' clips':28s} | {n:5d} | {cps[n]:7.1f} | "
              f"{med(str(n), 'build_seconds'):7.1f} | {med(str(n), 'tree_peak_mb'):17.0f} | "
              f"{med(str(n), 'self_maxrss_mb'):15.0f} |")
    small, large = (str(n) for n in sizes)
    # fixed per-process costs (imports: librosa's filterbank pulls in numba, ~1-3 s; pool
    # start) cancel out in the difference of the two builds
    marginal = (sizes[1] - sizes[0]) / (med(large, "build_seconds") - med(small, "build_seconds"))
    fixed_s = med(small, "build_seconds") - sizes[0] / marginal
    ratio_tree = med(large, "tree_peak_mb") / med(small, "tree_peak_mb")
    ratio_main = med(large, "self_maxrss_mb") / med(small, "self_maxrss_mb")
    print(f"\nmarginal throughput (4N - N clips over the build time difference): "
          f"{marginal:.1f} clips/s; fixed cost per build ~{fixed_s:.1f} s")
    print(f"peak RSS ratio {sizes[1]}/{sizes[0]} clips: process tree {ratio_tree:.3f}, "
          f"builder process {ratio_main:.3f} (target <= 1.3); cache size for {sizes[1]} clips "
          f"{results[large][0]['cache_mb']:.0f} MiB")
    summary = {
        "benchmark": "cache_build", "n_small": sizes[0], "n_large": sizes[1],
        "seconds_per_clip": args.seconds, "workers": args.workers, "repeats": args.repeats,
        "clips_per_s": {str(n): round(cps[n], 2) for n in sizes},
        "marginal_clips_per_s": round(marginal, 2), "fixed_seconds": round(fixed_s, 2),
        "tree_peak_rss_mib": {k: round(med(k, "tree_peak_mb"), 1) for k in results},
        "builder_maxrss_mib": {k: round(med(k, "self_maxrss_mb"), 1) for k in results},
        "rss_ratio_tree": round(ratio_tree, 3), "rss_ratio_builder": round(ratio_main, 3),
        "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
        "target_ratio": 1.3, "target_met": max(ratio_tree, ratio_main) <= 1.3,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
