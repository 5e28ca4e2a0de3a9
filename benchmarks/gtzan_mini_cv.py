"""5-fold cross-validation on the 50 real GTZAN clips in ../shared/data/gtzan-mini-dev.

    python -m benchmarks.gtzan_mini_cv [--modes late_fusion mid_two_way] [--epochs 12]

Each fold: 1 clip per genre for test, 1 for validation (model selection), 3 for training
(stratified folds, ``data.split=kfold data.folds=5``). The CNN runs go through the sweep
runner (``experiments.sweep`` on a generated sweep file, so finished folds are reused);
the baseline is MFCC statistics (mean and std of 20 MFCCs over the clip) + an RBF SVM
(scikit-learn) on the same folds, fitted on the training clips and, separately, on
training + validation clips (it needs no model selection). Reports clip accuracy
mean +- std over folds; the last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO.parent / "shared" / "data" / "gtzan-mini-dev"
# CPU-sized features (as the synthetic demo): 64 Mel bands, hop 1024.
COMMON = {"data": "gtzan", "data.root": str(ROOT), "data.split": "kfold", "data.folds": 5,
          "data.train_crops_per_clip": 8, "features.n_mels": 64, "features.hop_length": 1024,
          "trainer": "cpu", "callbacks.gradcam.enabled": False,
          "callbacks.ablation.enabled": False, "train.resume": "auto"}


def svm_baseline(folds: int = 5) -> dict:
    import torch
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from datamodules.audio import load_audio
    from datamodules.features import FeatureExtractor, FeatureParams
    from datamodules.gtzan import index_gtzan

    params = FeatureParams.from_dict({"names": ["mfcc"], "n_mfcc": 20})
    ext = FeatureExtractor(params)
    feats = {}
    accs = {"train": [], "train+valid": []}
    for fold in range(folds):
        ix = index_gtzan({"root": str(ROOT), "split": "kfold", "folds": folds, "fold": fold,
                          "split_seed": 0, "min_seconds": 3.0})
        t = ix.table
        for p in t["path"]:
            if p not in feats:
                m = ext(torch.from_numpy(load_audio(p).wave)[None])["mfcc"][0].numpy()
                feats[p] = np.concatenate([m.mean(1), m.std(1)])
        X = np.stack([feats[p] for p in t["path"]])
        y = t["label"].to_numpy()
        test = (t["split"] == "test").to_numpy()
        for name, fit in (("train", (t["split"] == "train").to_numpy()),
                          ("train+valid", t["split"].isin(["train", "valid"]).to_numpy())):
            clf = make_pipeline(StandardScaler(), SVC(C=10.0, kernel="rbf", gamma="scale"))
            clf.fit(X[fit], y[fit])
            accs[name].append(float((clf.predict(X[test]) == y[test]).mean()))
    return accs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["late_fusion", "mid_two_way"])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--folds", type=int, default=5)
    a = ap.parse_args()
    if not ROOT.is_dir():
        print(f"skipped: {ROOT} is absent (the real clips are only in the dev setup)",
              file=sys.stderr)
        return 0
    from experiments.config import compose

    out = Path(compose([]).paths.output_dir) / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    spec = {"name": "gtzan_mini_cv", "method": "grid",
            "metric": {"name": "val/acc_clip", "goal": "maximize"},
            "parameters": {**{k: {"value": v} for k, v in COMMON.items()},
                           "trainer.max_epochs": {"value": a.epochs},
                           "model": {"values": a.modes},
                           "data.fold": {"values": list(range(a.folds))},
                           "seed": {"value": 0}}}
    path = out / "gtzan_mini_cv.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", f"sweep={path}",
                        "logger.wandb.enabled=false"], cwd=REPO, capture_output=True, text=True)
    if r.returncode:
        print(r.stderr[-3000:], file=sys.stderr)
        return r.returncode
    import pandas as pd

    trials = pd.read_csv(Path(json.loads(r.stdout.strip().splitlines()[-1])["out_dir"])
                         / "trials.csv")
    rows = []
    for mode in a.modes:
        acc = trials[trials["param:model"] == mode]["test/acc_clip"].to_numpy()
        rows.append((f"{mode} (CNN, {a.epochs} epochs)", acc))
    svm = svm_baseline(a.folds)
    rows += [("MFCC stats + SVM (train clips)", np.array(svm["train"])),
             ("MFCC stats + SVM (train+valid clips)", np.array(svm["train+valid"]))]
    print(f"GTZAN mini (50 real clips), {a.folds}-fold CV (not artist-filtered), clip accuracy "
          f"on the test fold, mean and std over the folds")
    print(f"{'model':<42}{'mean %':>8}{'std %':>8}  per fold")
    summary = {"benchmark": "gtzan_mini_cv", "folds": a.folds, "results": {}}
    for name, acc in rows:
        std = acc.std(ddof=1) if len(acc) > 1 else 0.0
        print(f"{name:<42}{100 * acc.mean():>8.1f}{100 * std:>8.1f}  "
              + " ".join(f"{x:.1f}" for x in 100 * acc))
        summary["results"][name] = {"mean": round(float(acc.mean()), 4),
                                    "std": round(float(std), 4), "folds": acc.round(4).tolist()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
