"""Split protocols. Every split is decided per clip (never per segment).

- ``fault_filtered``: GTZAN's artist-conscious split without Sturm's faulty clips
  (Kereliuk et al. 2015; 443/197/290). The lists ship in ``torchaudio.datasets.gtzan``.
- ``random``: stratified by label, seeded, ratios configurable.
- ``kfold``: stratified k folds; fold ``i`` is test and fold ``(i+1) % k`` validation.
- ``official``: the dataset's own column (FMA), applied by its indexer.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import UserError
from .index import SPLITS, UNUSED


def fault_filtered_lists() -> dict[str, list[str]]:
    from torchaudio.datasets import gtzan

    return {"train": list(gtzan.filtered_train), "valid": list(gtzan.filtered_valid),
            "test": list(gtzan.filtered_test)}


def assign_fault_filtered(table: pd.DataFrame) -> tuple[pd.Series, dict]:
    """Split column for GTZAN clip ids, plus a report of listed-but-missing and unlisted clips."""
    lists = fault_filtered_lists()
    where = {cid: s for s, ids in lists.items() for cid in ids}
    split = table["clip_id"].map(where).fillna(UNUSED)
    present = set(table["clip_id"])
    missing = {s: sorted(set(ids) - present) for s, ids in lists.items()}
    unlisted = sorted(set(table["clip_id"]) - set(where))
    report = {
        "protocol": "fault_filtered (Kereliuk et al. 2015; torchaudio.datasets.gtzan lists)",
        "listed": {s: len(ids) for s, ids in lists.items()},
        "found": {s: int((split == s).sum()) for s in SPLITS},
        "missing": {s: len(v) for s, v in missing.items()},
        "missing_ids": {s: v for s, v in missing.items() if 0 < len(v) <= 25},
        "unlisted": unlisted,
    }
    return split, report


def _check_ratios(ratios) -> np.ndarray:
    r = np.asarray(list(ratios), dtype=float)
    if r.shape != (3,) or (r < 0).any() or not np.isclose(r.sum(), 1.0) or r[0] <= 0:
        raise UserError(f"data.ratios must be three non-negative numbers (train, valid, test) "
                        f"summing to 1 with train > 0, got {list(ratios)}")
    return r


def assign_random(table: pd.DataFrame, ratios=(0.7, 0.15, 0.15), seed: int = 0) -> pd.Series:
    """Stratified by ``label``: each class is shuffled and cut at the ratios (rounded so
    valid/test get their share even for small classes)."""
    r = _check_ratios(ratios)
    rng = np.random.default_rng(seed)
    split = pd.Series(UNUSED, index=table.index, dtype=object)
    for _, rows in table.groupby("label", sort=True):
        idx = rows.index.to_numpy()[rng.permutation(len(rows))]
        n = len(idx)
        n_test = int(round(r[2] * n))
        n_valid = int(round(r[1] * n))
        if n_test + n_valid >= n:  # always leave one training clip per class
            n_test, n_valid = max(0, min(n_test, n - 1)), max(0, min(n_valid, n - 1 - n_test))
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_valid]] = "valid"
        split[idx[n_test + n_valid:]] = "train"
    return split


def stratified_folds(table: pd.DataFrame, folds: int, seed: int = 0) -> pd.Series:
    """Fold number per clip: each class shuffled (seeded) and dealt round-robin, starting at
    a rotating fold so fold sizes stay within one clip of each other overall."""
    rng = np.random.default_rng(seed)
    fold = pd.Series(-1, index=table.index, dtype=int)
    start = 0
    for _, rows in table.groupby("label", sort=True):
        idx = rows.index.to_numpy()[rng.permutation(len(rows))]
        fold[idx] = (np.arange(len(idx)) + start) % folds
        start = (start + len(idx)) % folds
    return fold


def assign_kfold(table: pd.DataFrame, folds: int = 10, fold: int = 0, seed: int = 0) -> pd.Series:
    if folds < 3:
        raise UserError(f"data.folds must be >= 3 (test, validation and training folds), "
                        f"got {folds}")
    if not 0 <= fold < folds:
        raise UserError(f"data.fold must be in 0..{folds - 1}, got {fold}")
    f = stratified_folds(table, folds, seed)
    split = pd.Series("train", index=table.index, dtype=object)
    split[f == fold] = "test"
    split[f == (fold + 1) % folds] = "valid"
    return split


def assign_random_or_kfold(table: pd.DataFrame, data_cfg, dataset: str, split: str,
                           others: tuple[str, ...] = ()) -> pd.Series:
    """``data.split`` ``random`` or ``kfold`` from the data config; any other value is an
    error that names the protocols the dataset offers (``others`` and these two)."""
    if split == "random":
        return assign_random(table, data_cfg["ratios"], data_cfg.get("split_seed", 0))
    if split == "kfold":
        return assign_kfold(table, data_cfg["folds"], data_cfg["fold"],
                            data_cfg.get("split_seed", 0))
    names = [*others, "random", "kfold"]
    raise UserError(f"data.split={split!r} is not available for {dataset}: use "
                    f"{', '.join(names[:-1])} or {names[-1]}")


# Split protocols that keep every artist within one split (GTZAN's fault-filtered lists are
# artist-conscious; FMA's official split is artist-filtered). The others let artists cross.
ARTIST_FILTERED = {("gtzan", "fault_filtered"), ("fma_small", "official")}


def protocol(index, data_cfg) -> dict:
    """What a score computed on ``index``'s split means: dataset, split protocol, clips per
    split, the fold of k-fold, and whether artists are kept within one split (``None`` for
    the synthetic set, which has no artists)."""
    split = str(data_cfg.split)
    counts = index.per_split()
    out = {"dataset": index.dataset, "split": split,
           "clips": {s: int(counts.get(s, 0)) for s in SPLITS},
           "artist_filtered": None if index.dataset == "synth"
           else (index.dataset, split) in ARTIST_FILTERED}
    if split == "kfold":
        out.update(fold=int(data_cfg.fold), folds=int(data_cfg.folds))
    return out


def protocol_label(p: dict, fold: bool = True) -> str:
    """One line naming a protocol (:func:`protocol`); ``fold=False`` leaves the fold out
    (a figure averaged over every fold)."""
    split = p["split"]
    if split == "kfold":
        split = (f"{p['folds']}-fold CV (fold {p['fold']})" if fold
                 else f"{p['folds']}-fold CV")
    else:
        split += " split"
    artists = {True: "artist-filtered", False: "not artist-filtered",
               None: "synthetic, no artists"}[p.get("artist_filtered")]
    c = p["clips"]
    if p["split"] == "kfold" and not fold:  # split sizes differ by a clip between folds
        return f"{p['dataset']} {split}, {artists}, {sum(c.values())} clips"
    return (f"{p['dataset']} {split}, {artists}, "
            f"{c['train']}/{c['valid']}/{c['test']} train/valid/test clips")
