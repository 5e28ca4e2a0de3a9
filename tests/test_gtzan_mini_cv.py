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


def _trials(acc: dict[tuple[str, int, int], float]):
    import pandas as pd

    return pd.DataFrame([{"param:model": m, "param:seed": s, "param:data.fold": f,
                          "test/acc_clip": v} for (m, s, f), v in acc.items()])


def test_compare_pairs_each_mode_fold_by_fold_over_the_same_seeds():
    off = _trials({("mel_only", s, f): 0.5 + 0.1 * f for s in (0, 1, 2) for f in range(3)})
    on = _trials({("mel_only", s, f): 0.5 + 0.1 * f + (0.1 if s == 0 else 0.0)
                  for s in (0, 1) for f in range(3)})
    # Seeds 0 and 1 on both sides (seed 2 of the off run is left out): +0.05 on every fold.
    d = cv.compare_runs(on, off, ["mel_only"], [0, 1], 3)["mel_only"]
    assert d["delta"] == pytest.approx(0.05) and d["ci_low"] == pytest.approx(0.05)
    assert d["on"] == pytest.approx(0.65) and d["off"] == pytest.approx(0.6)
    with pytest.raises(SystemExit, match="mel_only lacks a finished run for some fold of "
                                         r"seeds \[0, 1, 2\]"):
        cv.compare_runs(on, off, ["mel_only"], [0, 1, 2], 3)


def test_grid_windows_follow_the_datamodules_geometry():
    # 30-s clips, 3-s windows: 646 frames at hop 1024 hold 9 disjoint windows of 65 frames.
    assert cv.grid_windows(0.0, 1024) == 9
    assert cv.grid_windows(0.5, 1024) == 19 and cv.grid_windows(0.5, 512) == 19


def test_compare_with_a_run_that_does_not_exist_stops_before_training(shared_data, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("MLFI_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["gtzan_mini_cv", "--name", "on", "--compare", "off"])
    monkeypatch.setattr(cv, "run_sweep", lambda *a: pytest.fail("trained before checking"))
    with pytest.raises(SystemExit, match=r"--compare off: .*sweeps/off/trials.csv does not "
                                         r"exist; run `python -m benchmarks.gtzan_mini_cv "
                                         r"--name off`"):
        cv.main()
