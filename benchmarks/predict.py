"""Library-scale prediction: files/s of the batched path against a one-file-at-a-time loop.

    python -m benchmarks.predict [--files 200] [--repeats 3] [--workers 2] [--batch-size 64]

Files: the 50 real GTZAN clips in ../shared/data/gtzan-mini-dev copied until there are
``--files`` of them (30-s noise WAVs when ../shared is absent), in a temporary folder.
Model: ``mid_two_way`` / ``parallel_cnn`` with the default GTZAN features (128 Mel bands,
hop 512, 3-s segments, 50 % overlap), untrained (speed does not depend on the weights),
saved as a checkpoint the way ``experiments.train`` writes one.

Reference: ``experiments.predict.predict_file`` for each file in turn, in this process
(decode, features, segments, model; torch's default threads). Batched:
``experiments.predict.predict_batches`` (decoding and features in ``--workers`` processes,
segments of several files per model batch, channels-last layout), in fp32 and with
bfloat16 autocast. All run in every repeat, one after the other (the machine is shared);
the table reports medians, ratios, and how far the batched predictions are from the
reference's. A per-stage profile of the
reference (decode, features, model per file) says what bounds the throughput. The last
stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GTZAN = REPO.parent / "shared" / "data" / "gtzan-mini-dev" / "genres"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_files(folder: Path, n: int) -> str:
    import soundfile as sf

    real = sorted(GTZAN.glob("*/*.wav")) if GTZAN.is_dir() else []
    if real:
        for i in range(n):
            src = real[i % len(real)]
            shutil.copy(src, folder / f"{i:04d}_{src.name}")
        return f"{n} copies of the {len(real)} real GTZAN clips in {GTZAN}"
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(str(folder / f"{i:04d}.wav"),
                 (0.1 * rng.standard_normal(22050 * 30)).astype(np.float32), 22050)
    return f"{n} x 30 s noise WAVs (../shared absent)"


def untrained_checkpoint(path: Path) -> Path:
    """A checkpoint of an untrained model with the default GTZAN config, in the format
    ``experiments.train`` writes (hyperparameters with the stored config, state dict)."""
    import pytorch_lightning as pl
    import torch

    from experiments.builders import model_kwargs
    from experiments.config import compose
    from lightning_modules import build_model

    cfg = compose(["data=gtzan", "model=mid_two_way", "trainer=gpu"])
    labels = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop",
              "reggae", "rock"]
    model = build_model("mid_two_way", **model_kwargs(cfg, labels, {"mel": 128, "chroma": 12}))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, str(path))
    return path


def profile(model, files: list[Path]) -> dict:
    """Seconds per file of each stage of the one-file loop (median over ``files``)."""
    import torch

    from datamodules.audio import load_audio
    from datamodules.inference import FileSegmenter

    seg = FileSegmenter(dict(model.hparams.extra))
    stages = {"decode": [], "features": [], "model": []}
    for f in files:
        t0 = time.perf_counter()
        d = load_audio(f, sample_rate=int(seg.audio["sample_rate"]), clip_seconds=None,
                       min_seconds=0.5, silence_db=float(seg.audio["silence_db"]))
        t1 = time.perf_counter()
        feats = seg.extractor(torch.from_numpy(d.wave)[None])
        t2 = time.perf_counter()
        segs, _ = seg.segments({k: v[0].float() for k, v in feats.items()})
        with torch.no_grad():
            model.segment_probs(segs, 64)
        t3 = time.perf_counter()
        for k, a, b in (("decode", t0, t1), ("features", t1, t2), ("model", t2, t3)):
            stages[k].append(b - a)
    return {k: statistics.median(v) for k, v in stages.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)

    import torch

    from datamodules.inference import FileSegmenter
    from experiments.predict import predict_batches, predict_file
    from lightning_modules import load_model

    tmp = Path(tempfile.mkdtemp(prefix="mlfi-predict-bench-"))
    try:
        source = make_files(tmp, a.files)
        files = sorted(str(p) for p in tmp.glob("*.wav"))
        ckpt = untrained_checkpoint(tmp / "model.ckpt")
        model = load_model(ckpt)  # the reference's; predict_batches converts its own copy
        batched_model = load_model(ckpt)
        seg = FileSegmenter(dict(model.hparams.extra))
        log(f"{source}; torch threads {torch.get_num_threads()}")
        predict_file(model, seg, files[0])  # warm-up (allocations, first-call costs)
        times: dict[str, list[float]] = {"ref": [], "32": [], "bf16": []}
        agree: dict[str, tuple[int, float]] = {}
        for r in range(a.repeats):
            t0 = time.perf_counter()
            ref = {f: predict_file(model, seg, f) for f in files}
            times["ref"].append(time.perf_counter() - t0)
            for prec in ("32", "bf16"):
                t0 = time.perf_counter()
                ours = {rec["file"]: rec for g in predict_batches(
                    batched_model, files, a.workers, a.batch_size, precision=prec)
                    for rec in g}
                times[prec].append(time.perf_counter() - t0)
                same = sum(ref[f]["genre"] == ours[f]["genre"] for f in files)
                diff = max(abs(p - ours[f]["probabilities"][g]) for f in files
                           for g, p in ref[f]["probabilities"].items())
                agree[prec] = (same, diff)
            log(f"repeat {r + 1}/{a.repeats}: one-by-one {times['ref'][-1]:.1f} s, batched "
                f"{times['32'][-1]:.1f} s, batched bf16 {times['bf16'][-1]:.1f} s")
        stages = profile(model, [Path(f) for f in files[:20]])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fps = {k: len(files) / statistics.median(v) for k, v in times.items()}
    bound = max(stages, key=stages.get)
    total = sum(stages.values())
    print(f"{len(files)} files ({source}); medians of {a.repeats} runs, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'path':<52}{'files/s':>9}{'ratio':>8}  agreement with one-by-one")
    print(f"{'one file at a time (predict_file loop), fp32':<52}{fps['ref']:>9.2f}{1:>8.2f}")
    for prec, name in (("32", "fp32"), ("bf16", "bf16 autocast")):
        same, diff = agree[prec]
        label = f"batched: {a.workers} workers, batch {a.batch_size}, channels-last, {name}"
        print(f"{label:<52}{fps[prec]:>9.2f}{fps[prec] / fps['ref']:>8.2f}  same genre "
              f"{same}/{len(files)}, max |dp| {diff:.1e}")
    print("one-file stages, s/file (median of 20): " + ", ".join(
        f"{k} {v:.3f} ({100 * v / total:.0f} %)" for k, v in stages.items())
        + f"; bound: {bound}")
    print(json.dumps({"benchmark": "predict", "files": len(files), "repeats": a.repeats,
                      "workers": a.workers, "batch_size": a.batch_size,
                      "one_by_one_files_per_s": round(fps["ref"], 2),
                      "batched_files_per_s": round(fps["32"], 2),
                      "batched_bf16_files_per_s": round(fps["bf16"], 2),
                      "ratio": round(fps["32"] / fps["ref"], 2),
                      "ratio_bf16": round(fps["bf16"] / fps["ref"], 2),
                      "same_genre": {k: v[0] for k, v in agree.items()},
                      "max_abs_prob_diff": {k: v[1] for k, v in agree.items()},
                      "stages_s_per_file": {k: round(v, 4) for k, v in stages.items()},
                      "bound": bound}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
