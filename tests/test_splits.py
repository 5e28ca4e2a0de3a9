"""Split protocols as exact counts: ratios per class, small classes, k-fold rotation."""
from __future__ import annotations

import pandas as pd
import pytest

from datamodules.errors import UserError
from datamodules.splits import (
    assign_kfold,
    assign_random,
    assign_random_or_kfold,
    stratified_folds,
)


def clips(per_class: dict[int, int]) -> pd.DataFrame:
    rows = [{"clip_id": f"c{label}.{i:03d}", "label": label}
            for label, n in per_class.items() for i in range(n)]
    return pd.DataFrame(rows)


def counts(table, split) -> dict[int, dict[str, int]]:
    return {int(y): split[g.index].value_counts().to_dict() for y, g in table.groupby("label")}


def test_random_split_cuts_every_class_at_the_ratios():
    table = clips({y: 20 for y in range(10)})
    split = assign_random(table, ratios=(0.6, 0.1, 0.3), seed=4)
    assert all(c == {"train": 12, "test": 6, "valid": 2} for c in counts(table, split).values())
    assert split.equals(assign_random(table, ratios=(0.6, 0.1, 0.3), seed=4))
    assert not split.equals(assign_random(table, ratios=(0.6, 0.1, 0.3), seed=5))


def test_small_classes_keep_one_training_clip():
    table = clips({0: 3, 1: 2, 2: 1})
    c = counts(table, assign_random(table, ratios=(0.4, 0.3, 0.3), seed=0))
    assert c[0] == {"train": 1, "valid": 1, "test": 1}
    assert c[1] == {"train": 1, "test": 1}
    assert c[2] == {"train": 1}


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.7, 0.4, -0.1), (0.0, 0.5, 0.5),
                                    (0.5, 0.2, 0.2)])
def test_bad_ratios_are_refused(ratios):
    with pytest.raises(UserError, match="data.ratios must be three non-negative numbers"):
        assign_random(clips({0: 4}), ratios=ratios)


def test_kfold_every_clip_is_tested_once_and_validates_the_next_fold():
    table = clips({y: 7 for y in range(10)})  # 70 clips, 5 folds of exactly 14
    folds = stratified_folds(table, 5, seed=2)
    assert sorted(folds.value_counts().tolist()) == [14] * 5
    for _, g in table.groupby("label"):  # 7 clips per class over 5 folds: 1 or 2 each
        assert sorted(folds[g.index].value_counts().tolist()) == [1, 1, 1, 2, 2]
    tested, validated = pd.Series(0, index=table.index), pd.Series(0, index=table.index)
    for k in range(5):
        split = assign_kfold(table, folds=5, fold=k, seed=2)
        assert split[folds == k].eq("test").all()
        assert split[folds == (k + 1) % 5].eq("valid").all()
        assert (split == "train").sum() == 42
        tested += split.eq("test")
        validated += split.eq("valid")
    assert tested.eq(1).all() and validated.eq(1).all()
    assert not folds.equals(stratified_folds(table, 5, seed=3))


@pytest.mark.parametrize("folds,fold,message", [(2, 0, "data.folds must be >= 3"),
                                                (5, 5, "data.fold must be in 0..4"),
                                                (5, -1, "data.fold must be in 0..4")])
def test_bad_fold_settings_are_refused(folds, fold, message):
    with pytest.raises(UserError, match=message):
        assign_kfold(clips({0: 10}), folds=folds, fold=fold)


def test_a_split_the_dataset_lacks_names_the_ones_it_offers():
    table = clips({0: 6, 1: 6})
    with pytest.raises(UserError, match="data.split='official' is not available for gtzan: use "
                                        "fault_filtered, random or kfold"):
        assign_random_or_kfold(table, {}, "gtzan", "official", others=("fault_filtered",))
    cfg = {"ratios": [0.5, 0.25, 0.25], "folds": 3, "fold": 1}
    assert assign_random_or_kfold(table, cfg, "synth_sync", "kfold").value_counts().to_dict() \
        == {"train": 4, "test": 4, "valid": 4}
