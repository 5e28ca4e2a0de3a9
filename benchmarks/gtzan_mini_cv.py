"""Cross-validation on the 50 real GTZAN clips in ../shared/data/gtzan-mini-dev: every mode,
folds x seeds, and clip-statistics + SVM baselines on the same folds.

    python -m benchmarks.gtzan_mini_cv [--modes ...] [--seeds 0 1] [--epochs 20] [--crops 16]
        [--set data.spec_augment.enabled=true ...] [--name gtzan_mini_cv] [--compare NAME]

Each fold (stratified, ``data.split=kfold data.folds=5``): 1 clip per genre for test, 1 for
validation (model selection), 3 for training (30 clips). The CNN runs go through the sweep
runner (a generated sweep file, two trials at a time; finished trials are reused), each
with the same budget: ``--epochs`` epochs of ``--crops`` random 3-s windows per training
clip, batch 32, peak learning rate 3e-3, no early stopping (a 10-clip validation split
would stop runs at random); ``--crops 0``: every window of the clip's grid each epoch
(``data.segment_overlap``, 0 here) instead of random ones. Features: 64 Mel bands, hop
1024 (the CPU-sized grid of the synthetic demo, about 6x cheaper than the default
128 x 130; ``--real-features`` uses the default grid). ``--set`` adds overrides to every
run (a recipe's on/off comparison); ``--compare NAME`` then pairs each mode's test
accuracy, fold by fold, with the same mode and seeds of the finished run ``--name NAME``
(the recipe off).

Baselines: per-band mean and std over the whole clip of MFCC (20), chroma (12) and both,
standardised, RBF SVM (C=10), fitted on the training + validation clips of each fold (an
SVM needs no model selection). Reported: clip accuracy on the test fold, mean +- std over
folds x seeds; paired differences per fold (CNN runs averaged over seeds) against mel_only
and against the MFCC + chroma SVM, with 95 % CIs (paired t-test over the folds); and the
sweep's own table (paired over folds x seeds against late fusion) in its results.md. The
last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO.parent / "shared" / "data" / "gtzan-mini-dev"
MODES = ("late_fusion", "mid_into_mel", "mid_into_chroma", "mid_two_way", "mel_only",
         "chroma_only")
BATCH = 32
COMMON = {"data": "gtzan", "data.root": str(ROOT), "data.split": "kfold", "data.folds": 5,
          "data.segment_overlap": 0.0, "data.batch_size": BATCH, "model.lr": 0.003,
          "trainer": "cpu", "callbacks.early_stopping.enabled": False,
          "callbacks.gradcam.enabled": False, "callbacks.ablation.enabled": False,
          "callbacks.interpretability.enabled": False, "logger.wandb.enabled": False,
          "train.channels_last": True, "train.resume": "auto"}
CPU_FEATURES = {"features.n_mels": 64, "features.hop_length": 1024}
SVM_SETS = {"MFCC": ("mfcc",), "chroma": ("chroma",), "MFCC + chroma": ("mfcc", "chroma")}


def fold_tables(folds: int) -> list:
    from datamodules.gtzan import index_gtzan

    return [index_gtzan({"root": str(ROOT), "split": "kfold", "folds": folds, "fold": f,
                         "split_seed": 0, "min_seconds": 3.0}).table for f in range(folds)]


def svm_baselines(tables: list) -> dict[str, list[float]]:
    """Test accuracy per fold of each statistics set + RBF SVM (fit: train + valid)."""
    import torch
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from datamodules.audio import load_audio
    from datamodules.features import FeatureExtractor, FeatureParams

    ext = FeatureExtractor(FeatureParams.from_dict({"names": ["mfcc", "chroma"], "n_mfcc": 20}))
    stats: dict[str, dict[str, np.ndarray]] = {}
    for p in sorted(set().union(*(t["path"] for t in tables))):
        f = ext(torch.from_numpy(load_audio(p).wave)[None])
        stats[p] = {n: np.concatenate([f[n][0].numpy().mean(1), f[n][0].numpy().std(1)])
                    for n in ("mfcc", "chroma")}
    out: dict[str, list[float]] = {name: [] for name in SVM_SETS}
    for t in tables:
        y = t["label"].to_numpy()
        fit = t["split"].isin(["train", "valid"]).to_numpy()
        test = (t["split"] == "test").to_numpy()
        for name, parts in SVM_SETS.items():
            X = np.stack([np.concatenate([stats[p][n] for n in parts]) for p in t["path"]])
            clf = make_pipeline(StandardScaler(), SVC(C=10.0, kernel="rbf", gamma="scale"))
            clf.fit(X[fit], y[fit])
            out[name].append(float((clf.predict(X[test]) == y[test]).mean()))
    return out


def run_sweep(a, overrides: dict) -> Path:
    from experiments.config import compose

    out = Path(compose([]).paths.output_dir) / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    params = {**COMMON, **({} if a.real_features else CPU_FEATURES), **overrides,
              "trainer.max_epochs": a.epochs, "data.train_crops_per_clip": a.crops or None}
    spec = {"name": a.name, "method": "grid",
            "metric": {"name": "val/acc_clip", "goal": "maximize"},
            "local": {"parallel": a.parallel},
            "parameters": {**{k: {"value": v} for k, v in params.items()},
                           "model": {"values": list(a.modes)},
                           "data.fold": {"values": list(range(a.folds))},
                           "seed": {"values": list(a.seeds)}}}
    path = out / f"{a.name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", f"sweep={path}"], cwd=REPO,
                       stdout=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"the sweep {path} failed (exit {r.returncode}); its trial logs are in "
                         f"{out.parent / 'sweeps' / a.name / 'logs'}")
    return Path(json.loads(r.stdout.strip().splitlines()[-1])["out_dir"])


def grid_windows(overlap: float, hop_length: int, sample_rate: int = 22050) -> int:
    """3-s windows on the grid of a 30-s clip at ``overlap`` (the datamodule's geometry)."""
    from datamodules.segments import segment_geometry, segment_starts

    seg, hop = segment_geometry(3.0, overlap, sample_rate, hop_length)
    frames = 1 + int(round(30.0 * sample_rate)) // hop_length  # a centred STFT's frames
    return len(segment_starts(frames, seg, hop))


def fold_means(trials, mode: str, seeds, folds: int) -> np.ndarray:
    """Test clip accuracy per fold of one mode, averaged over ``seeds`` (NaN: a fold that
    lacks a run of some seed)."""
    t = trials[(trials["param:model"] == mode) & trials["param:seed"].isin(list(seeds))]
    by_fold = t.groupby("param:data.fold")
    mean = by_fold["test/acc_clip"].mean().where(
        by_fold["param:seed"].nunique() == len(set(seeds)))
    return mean.reindex(range(folds)).to_numpy(dtype=float)


def compare_runs(on, off, modes, seeds, folds: int) -> dict[str, dict]:
    """Per mode: the paired difference ``on - off`` over folds (the same seeds averaged on
    both sides), with its 95 % CI and p (paired t-test)."""
    from experiments.sweep_stats import repetitions_test

    out = {}
    for mode in modes:
        a, b = fold_means(on, mode, seeds, folds), fold_means(off, mode, seeds, folds)
        if np.isnan(a).any() or np.isnan(b).any():
            raise SystemExit(f"--compare: {mode} lacks a finished run for some fold of seeds "
                             f"{list(seeds)} on one side; run both with the same --modes, "
                             f"--seeds and --folds")
        d = repetitions_test(a, b)
        out[mode] = {"on": float(a.mean()), "off": float(b.mean()),
                     **{k: d.get(k) for k in ("delta", "ci_low", "ci_high", "p")}}
    return out


def _override(word: str) -> tuple[str, object]:
    if "=" not in word:
        raise SystemExit(f"--set {word!r}: expected key=value")
    k, v = word.split("=", 1)
    return k, yaml.safe_load(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--real-features", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--name", default="gtzan_mini_cv")
    ap.add_argument("--compare", metavar="NAME",
                    help="pair every mode with the same mode of the finished run --name NAME")
    a = ap.parse_args()
    if not ROOT.is_dir():
        print(f"skipped: {ROOT} is absent (the real clips are only in the dev setup)",
              file=sys.stderr)
        return 0
    import pandas as pd

    from experiments.sweep_stats import repetitions_test

    if a.compare == a.name:
        raise SystemExit(f"--compare {a.compare}: name the other run (this one is --name "
                         f"{a.name})")
    if a.compare:  # checked before the runs, not after them
        from experiments.config import compose

        other = Path(compose([]).paths.output_dir) / "sweeps" / a.compare / "trials.csv"
        if not other.is_file():
            raise SystemExit(f"--compare {a.compare}: {other} does not exist; run "
                             f"`python -m benchmarks.gtzan_mini_cv --name {a.compare}` (the "
                             f"recipe off) first")
    overrides = dict(_override(w) for w in a.set)
    tables = fold_tables(a.folds)
    n_train = int((tables[0]["split"] == "train").sum())
    overlap = float(overrides.get("data.segment_overlap", COMMON["data.segment_overlap"]))
    hop_length = 512 if a.real_features else CPU_FEATURES["features.hop_length"]
    windows = a.crops or grid_windows(overlap, hop_length)
    steps = a.epochs * math.ceil(n_train * windows / BATCH)
    sweep_dir = run_sweep(a, overrides)
    trials = pd.read_csv(sweep_dir / "trials.csv")
    per_fold: dict[str, np.ndarray] = {}
    rows = []
    for mode in a.modes:
        t = trials[trials["param:model"] == mode]
        acc = t["test/acc_clip"].to_numpy(dtype=float)
        per_fold[mode] = fold_means(trials, mode, a.seeds, a.folds)
        rows.append((f"{mode} (CNN)", acc, f"{len(acc)} runs"))
    svm = svm_baselines(tables)
    for name, acc in svm.items():
        per_fold[f"{name} SVM"] = np.array(acc)
        rows.append((f"{name} stats + SVM", np.array(acc), f"{len(acc)} folds"))
    feats = "128 Mel x hop 512" if a.real_features else "64 Mel x hop 1024"
    extra = (" + " + " ".join(a.set)) if a.set else ""
    print(f"GTZAN mini (50 real clips), {a.folds}-fold CV (not artist-filtered; per fold 30 "
          f"train / 10 valid / 10 test clips), test clip accuracy.\nCNN budget: {a.epochs} "
          f"epochs x {windows} {'random' if a.crops else 'grid'} 3-s windows per training "
          f"clip, batch {BATCH}: {steps} "
          f"optimiser steps; {feats}; seeds {a.seeds}{extra}.")
    print(f"{'model':<28}{'mean %':>8}{'std %':>8}  over")
    summary = {"benchmark": "gtzan_mini_cv", "name": a.name, "folds": a.folds,
               "seeds": a.seeds, "steps": steps, "overrides": overrides, "results": {},
               "paired": {}, "sweep_dir": str(sweep_dir)}
    for name, acc, over in rows:
        std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
        print(f"{name:<28}{100 * acc.mean():>8.1f}{100 * std:>8.1f}  {over}")
        summary["results"][name] = {"mean": round(float(acc.mean()), 4), "std": round(std, 4),
                                    "n": int(len(acc))}
    refs = [r for r in ("mel_only", "MFCC + chroma SVM") if r in per_fold]
    print(f"\nPaired differences per fold (points; CNN runs averaged over seeds; paired t-test "
          f"over {a.folds} folds, 95 % CI):")
    for ref in refs:
        for name in per_fold:
            if name == ref:
                continue
            d = repetitions_test(per_fold[name], per_fold[ref])
            lo, hi = d.get("ci_low"), d.get("ci_high")
            ci = "" if lo is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            p = d.get("p")
            print(f"  {name:<24} - {ref:<18} {100 * d['delta']:+6.1f}{ci}"
                  + ("" if p is None else f"  p {p:.3f}"))
            summary["paired"][f"{name} - {ref}"] = {k: d.get(k) for k in
                                                    ("delta", "ci_low", "ci_high", "p")}
    if a.compare:
        cmp = compare_runs(trials, pd.read_csv(other), a.modes, a.seeds, a.folds)
        print(f"\nOn/off against {a.compare} (points; paired t-test over {a.folds} folds):")
        for mode, d in cmp.items():
            ci = ("" if d["ci_low"] is None
                  else f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]")
            print(f"  {mode:<18} on {100 * d['on']:5.1f}  off {100 * d['off']:5.1f}  "
                  f"{100 * d['delta']:+6.1f}{ci}" + ("" if d["p"] is None else f"  p {d['p']:.3f}"))
        summary["compare"] = {"against": a.compare, "modes": cmp}
    print(f"\nThe sweep's table (paired over folds x seeds against late fusion): "
          f"{sweep_dir / 'results.md'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
