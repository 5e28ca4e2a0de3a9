"""Paired comparisons between sweep settings: is a difference in test accuracy real?

Two settings are compared on the repetitions they share (the same seed and fold, see
``REPETITION_KEYS``): the difference of their test clip accuracies per repetition.

- two or more matched repetitions: a paired t-test (``ttest``, 95 % CI from the t
  distribution) or an exact Wilcoxon signed-rank test (``wilcoxon``; 95 % CI of the mean
  difference by a percentile bootstrap over repetitions from 10 pairs on, none below);
- one matched repetition with per-clip predictions for both runs: McNemar's exact test on the
  clips one run gets right and the other wrong, with a paired bootstrap 95 % CI over the clips;
- otherwise the difference alone, with the reason no test was made.

Every statistic comes from ``scipy.stats``. Differences are in accuracy fractions (0.02 =
2 points); p-values are two-sided and not corrected for multiple comparisons.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

TESTS = ("ttest", "wilcoxon")
BOOTSTRAP_RESAMPLES = 9999
# Fewer repetitions than this get no bootstrap CI (its resamples would repeat a few values).
MIN_BOOTSTRAP_PAIRS = 10


def _finite(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def repetitions_test(a: np.ndarray, b: np.ndarray, test: str = "ttest") -> dict:
    """Paired test of ``a - b`` over n >= 2 matched repetitions."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    # Accuracies are k/N (N < 10^6; logged as float32): rounding to 6 decimals removes noise
    # that would pass for variance (a spurious p ~ 1e-14) or break ties in the ranks.
    d = np.round(a - b, 6)
    n = len(d)
    out = {"delta": float(d.mean()), "pairs": n}
    if test == "ttest":
        if np.all(d == d[0]):  # zero variance: t is undefined
            out.update(ci_low=float(d[0]), ci_high=float(d[0]),
                       p=1.0 if d[0] == 0 else None,
                       test=f"paired t-test ({n} pairs; identical differences)")
            return out
        res = stats.ttest_1samp(d, 0.0)  # = ttest_rel(a, b) on the rounded differences
        ci = res.confidence_interval(0.95)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=_finite(res.pvalue),
                   test=f"paired t-test ({n} pairs)")
        return out
    if test == "wilcoxon":
        if np.all(d == 0):
            p = 1.0
        else:
            p = _finite(stats.wilcoxon(d, zero_method="wilcox", method="exact").pvalue)
        if n >= MIN_BOOTSTRAP_PAIRS:
            from lightning_modules.ablations import bootstrap_ci

            low, high = bootstrap_ci(d, n_resamples=BOOTSTRAP_RESAMPLES)
            name = f"exact Wilcoxon signed-rank ({n} pairs; bootstrap CI)"
        else:  # a bootstrap of a handful of values is far too narrow
            low = high = None
            name = f"exact Wilcoxon signed-rank ({n} pairs; no CI below " \
                   f"{MIN_BOOTSTRAP_PAIRS} pairs)"
        out.update(ci_low=low, ci_high=high, p=p, test=name)
        return out
    raise ValueError(f"paired_test={test!r}: choose one of {', '.join(TESTS)}")


def clips_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test and a paired bootstrap CI over clips (one run per setting)."""
    from scipy import stats

    a = np.asarray(correct_a, float)
    b = np.asarray(correct_b, float)
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    from lightning_modules.ablations import bootstrap_ci

    low, high = bootstrap_ci(a - b, n_resamples=BOOTSTRAP_RESAMPLES)  # paired, over clips
    return {"delta": float((a - b).mean()), "pairs": 1, "ci_low": low, "ci_high": high,
            "p": p, "test": f"McNemar exact ({len(a)} clips, {only_a} vs {only_b} "
                            f"discordant; bootstrap CI)"}


def _clip_correct(path) -> pd.Series | None:
    """``correct`` per clip id from a run's ``predictions_test.csv``, or None."""
    if not path or not Path(str(path)).is_file():
        return None
    df = pd.read_csv(path)
    if "correct" not in df:
        df["correct"] = (df["predicted"] == df["genre"]).astype(int)
    return df.set_index("clip_id")["correct"]


def compare(runs_a: pd.DataFrame, runs_b: pd.DataFrame, metric: str = "test/acc_clip",
            test: str = "ttest") -> dict | None:
    """Setting A against setting B on their matched repetitions (``rep`` column) of
    ``metric``; ``predictions_csv`` columns give the per-clip test of a single pair. None
    when they share no repetition with the metric."""
    a = runs_a.dropna(subset=[metric]).drop_duplicates("rep").set_index("rep")
    b = runs_b.dropna(subset=[metric]).drop_duplicates("rep").set_index("rep")
    reps = [r for r in a.index if r in b.index]
    if not reps:
        return None
    va, vb = a.loc[reps, metric].to_numpy(float), b.loc[reps, metric].to_numpy(float)
    if len(reps) >= 2:
        return repetitions_test(va, vb, test)
    ca = _clip_correct(a.loc[reps[0]].get("predictions_csv"))
    cb = _clip_correct(b.loc[reps[0]].get("predictions_csv"))
    if ca is not None and cb is not None and set(ca.index) == set(cb.index) and len(ca):
        return clips_test(ca.sort_index().to_numpy(), cb.sort_index().to_numpy())
    return {"delta": float(va[0] - vb[0]), "pairs": 1, "ci_low": None, "ci_high": None,
            "p": None, "test": "none (one matched repetition, no shared per-clip predictions)"}


def ensemble_accuracy(runs: pd.DataFrame) -> tuple[float | None, int]:
    """Test clip accuracy of the seed ensemble of one setting: per fold (the repetition
    without its seed), the runs' per-clip probabilities (``p_<genre>`` columns of their
    ``predictions_csv``) are averaged and the argmax compared with the genre; the result
    is the mean over folds. Returns ``(accuracy, members)`` (``None, 0`` when no fold has
    two runs with predictions)."""
    import json

    accs, members = [], 0
    folds: dict[str, list[pd.DataFrame]] = {}
    for _, r in runs.iterrows():
        path = r.get("predictions_csv")
        if not path or not Path(str(path)).is_file():
            continue
        rep = {k: v for k, v in json.loads(r["rep"]).items() if k != "seed"}
        folds.setdefault(json.dumps(rep, sort_keys=True), []).append(pd.read_csv(path))
    for frames in folds.values():
        if len(frames) < 2:
            continue
        cols = [c for c in frames[0].columns if c.startswith("p_")]
        stacked = pd.concat([f.set_index("clip_id")[cols] for f in frames])
        mean = stacked.groupby(level=0).mean()
        genre = frames[0].set_index("clip_id")["genre"].reindex(mean.index)
        pred = mean.idxmax(axis=1).str[2:]
        accs.append(float((pred == genre).mean()))
        members = max(members, len(frames))
    return (float(np.mean(accs)), members) if accs else (None, 0)
