"""benchmarks.gtzan_mini_cv on the real clips: its folds and its SVM baselines."""
from __future__ import annotations

import pytest

from benchmarks import gtzan_mini_cv as cv


def test_folds_test_every_clip_once_with_one_clip_per_genre(shared_data):
    tables = cv.fold_tables(5)
    tested = [set(t.loc[t["split"] == "test", "clip_id"]) for t in tables]
    assert sum(len(s) for s in tested) == 50 and len(set().union(*tested)) == 50
    for t in tables:
        counts = t.groupby("split")["genre"].nunique().to_dict()
        assert counts == {"test": 10, "train": 10, "valid": 10}
        assert (t["split"] == "train").sum() == 30


@pytest.mark.slow
def test_svm_baselines_score_every_fold_above_chance_with_mfcc(shared_data):
    acc = cv.svm_baselines(cv.fold_tables(5))
    assert set(acc) == set(cv.SVM_SETS) and all(len(v) == 5 for v in acc.values())
    assert sum(acc["MFCC"]) / 5 > 0.3  # chance is 0.1
