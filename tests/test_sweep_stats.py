"""Sweep statistics: aggregation by protocol unit (seeds, folds), one trial per effective
config, paired tests against late fusion and the chosen setting, capacity matching."""
import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments.config import compose
from experiments.run_dirs import MID_MODES, config_hash
from experiments.sweep_files import distinct_trials, expand, load_sweep, plan
from experiments.sweep_results import aggregate, render_markdown, render_terminal
from experiments.sweep_stats import clips_test, repetitions_test
from lightning_modules import MODES
from tests.conftest import call_cli, last_json

KFOLD = {"name": "cv", "method": "grid", "metric": {"name": "val/acc_clip", "goal": "maximize"},
         "parameters": {}}


def record(params, val, test, **summary):
    key = json.dumps(params, sort_keys=True)
    return {"key": key, "params": params, "status": "ok", "seconds": 1.0,
            "summary": {"val/acc_clip": val, "test/acc_clip": test, **summary}}


def kfold_records():
    """A 5-fold x 2-seed sweep of two modes. late_fusion has the single best fold on
    validation (0.99) but the lower mean; mid_two_way is better on average."""
    recs = []
    for seed in (0, 1):
        for fold in range(5):
            common = {"data": "gtzan", "data.split": "kfold", "data.fold": fold, "seed": seed}
            lf_val = 0.99 if (seed, fold) == (0, 2) else 0.70 + 0.01 * fold
            recs.append(record({**common, "model": "late_fusion"}, lf_val,
                               0.70 + 0.01 * fold + 0.002 * seed, mode="late_fusion"))
            recs.append(record({**common, "model": "mid_two_way"}, 0.80 + 0.01 * fold,
                               0.75 + 0.01 * fold + 0.004 * seed * (fold % 2), mode="mid_two_way"))
    return recs


def test_kfold_settings_are_averaged_over_every_fold_and_seed():
    trials, table = aggregate(kfold_records(), KFOLD)
    assert len(trials) == 20 and len(table) == 2  # one setting per mode, not one per fold
    lf = table[table["model"] == "late_fusion"].iloc[0]
    mid = table[table["model"] == "mid_two_way"].iloc[0]
    assert lf["runs"] == 10 and lf["repetitions"] == "5 folds x 2 seeds"
    assert "data.fold" not in table.columns and "seed" not in table.columns
    vals = [r["summary"]["val/acc_clip"] for r in kfold_records() if r["params"]["model"] ==
            "late_fusion"]
    assert lf["val/acc_clip mean"] == pytest.approx(np.mean(vals))
    assert lf["val/acc_clip std"] == pytest.approx(np.std(vals, ddof=1))
    # Chosen on the mean validation score, not on late fusion's single 0.99 fold.
    assert bool(mid["chosen"]) and not bool(lf["chosen"])
    # Paired fold by fold and seed by seed: 10 pairs, mean difference of the test scores.
    d = mid["delta vs late_fusion"]
    assert mid["pairs vs late_fusion"] == 10
    assert d == pytest.approx(0.05 + 0.004 * 2 / 10 - 0.002 / 2)
    assert mid["test vs late_fusion"] == "paired t-test (10 pairs)"
    assert mid["ci_low vs late_fusion"] < d < mid["ci_high vs late_fusion"]
    assert mid["p vs late_fusion"] < 1e-6
    assert lf["delta vs chosen"] == pytest.approx(-d)


def test_an_incomplete_grid_says_how_many_runs_it_has():
    recs = [r for r in kfold_records() if not (r["params"]["seed"] == 1
                                               and r["params"]["data.fold"] == 4)]
    _, table = aggregate(recs, KFOLD)
    assert set(table["repetitions"]) == {"9 runs: 5 folds x 2 seeds"}


def test_paired_t_test_matches_a_hand_computation():
    # d = (0.05, 0.02, 0.05): mean 0.04, sd 0.01732, se 0.01, t = 4 on 2 df.
    r = repetitions_test([0.90, 0.92, 0.95], [0.85, 0.90, 0.90])
    assert r["delta"] == pytest.approx(0.04) and r["pairs"] == 3
    assert r["p"] == pytest.approx(0.05719, abs=1e-5)
    assert r["ci_low"] == pytest.approx(0.04 - 4.302653 * 0.01, abs=1e-6)
    assert r["ci_high"] == pytest.approx(0.04 + 4.302653 * 0.01, abs=1e-6)


def test_exact_wilcoxon_over_six_repetitions():
    a, b = np.arange(6) * 0.01 + 0.8, np.arange(6) * 0.01 + 0.7 - np.arange(6) * 0.001
    r = repetitions_test(a, b, "wilcoxon")
    assert r["p"] == pytest.approx(2 / 64)  # every difference positive: 1 of 64 sign patterns
    assert r["test"] == "exact Wilcoxon signed-rank (6 pairs; no CI below 10 pairs)"
    assert r["ci_low"] is None  # a bootstrap of 6 values would be far too narrow
    r12 = repetitions_test(np.r_[a, a + 0.05], np.r_[b, b + 0.04], "wilcoxon")
    assert r12["p"] == pytest.approx(2 / 4096) and r12["ci_low"] <= r12["delta"] <= r12["ci_high"]


def test_mcnemar_over_clips_when_each_setting_ran_once(tmp_path):
    clips = [f"c{i}" for i in range(60)]

    def preds(name, correct):
        df = pd.DataFrame({"clip_id": clips, "genre": "rock",
                           "predicted": ["rock" if c else "jazz" for c in correct]})
        df.to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    a = [1] * 50 + [0] * 10   # right on the first 50 clips
    b = [1] * 40 + [0] * 20   # right on the first 40: 10 clips only A gets right
    recs = [record({"model": "mid_two_way", "seed": 0}, 0.9, 50 / 60, mode="mid_two_way",
                   predictions_csv=preds("a.csv", a)),
            record({"model": "late_fusion", "seed": 0}, 0.8, 40 / 60, mode="late_fusion",
                   predictions_csv=preds("b.csv", b))]
    _, table = aggregate(recs, KFOLD)
    mid = table[table["model"] == "mid_two_way"].iloc[0]
    assert mid["delta vs late_fusion"] == pytest.approx(10 / 60)
    assert mid["p vs late_fusion"] == pytest.approx(2 * 0.5 ** 10)  # exact binomial, 10 vs 0
    assert mid["test vs late_fusion"].startswith("McNemar exact (60 clips, 10 vs 0 discordant")
    assert 0 < mid["ci_low vs late_fusion"] < mid["ci_high vs late_fusion"] < 0.3
    assert clips_test(np.array(a), np.array(a))["p"] == 1.0


def test_results_tables_name_protocol_capacity_and_comparisons():
    proto = {"dataset": "gtzan", "split": "kfold", "fold": 0, "folds": 5,
             "clips": {"train": 600, "valid": 200, "test": 200}, "artist_filtered": False}
    recs = kfold_records()
    for r in recs:
        big = r["params"]["model"] == "mid_two_way"
        r["summary"].update(protocol=dict(proto, fold=r["params"]["data.fold"]),
                            params=247682 if big else 216194, mflops=192.7 if big else 156.4)
    trials, table = aggregate(recs, KFOLD)
    meta = {"planned": 20, "ok": 20, "failed": 0, "collapsed": 0}
    md = render_markdown(table, trials, recs, KFOLD, meta)
    assert ("Protocol: gtzan 5-fold CV, not artist-filtered, 1000 "
            "clips.") in md
    assert "over the repetitions of each setting (5 folds x 2 seeds)" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| mid_two_way | 10 (5 folds"))
    assert "| 247,682 | 192.7 |" in row and row.endswith("★ |")
    cmp_row = [ln for ln in md.splitlines() if ln.startswith("| mid_two_way | +4.98 |")]
    assert cmp_row and "paired t-test (10 pairs)" in cmp_row[0]
    assert "| late_fusion | (reference) |" in md
    term = render_terminal(table, trials)
    lf, mid = (next(ln.split() for ln in term.splitlines() if ln.startswith(m))
               for m in ("late_fusion", "mid_two_way"))
    assert mid[-3] == "+4.98*" and mid[-2] == "ref"  # p < 0.05 is marked
    assert lf[-2:] == ["ref", "-4.98*"]  # (not chosen: no last cell)
    assert "5-fold CV" in term


def test_late_fusion_baseline_is_the_one_sharing_most_parameters():
    recs = []
    for bb in ("serial_cnn", "parallel_cnn"):
        for model, base in (("late_fusion", 0.7), ("mid_two_way", 0.8)):
            for seed in (0, 1, 2):
                acc = base + (0.1 if bb == "parallel_cnn" else 0) + 0.01 * seed * (model < "m")
                recs.append(record({"backbone": bb, "model": model, "seed": seed}, acc, acc,
                                   mode=model))
    _, table = aggregate(recs, KFOLD)
    for bb in ("serial_cnn", "parallel_cnn"):
        mid = table[(table["model"] == "mid_two_way") & (table["backbone"] == bb)].iloc[0]
        assert mid["delta vs late_fusion"] == pytest.approx(0.1 - 0.01)  # same backbone
    # A late-fusion setting is its own baseline, not compared with the other backbone's.
    assert table.loc[table["model"] == "late_fusion", "delta vs late_fusion"].isna().all()


def test_contrast_is_parallel_minus_serial_within_each_mode_paired_over_seeds():
    spec = dict(KFOLD, name="interp", contrast="backbone",
                parameters={"backbone": {"values": ["serial_cnn", "parallel_cnn"]},
                            "model": {"values": ["mid_two_way", "late_fusion"]},
                            "seed": {"values": [0, 1, 2]}})
    recs = []
    for bb in ("serial_cnn", "parallel_cnn"):
        for model, base in (("mid_two_way", 0.8), ("late_fusion", 0.7)):
            for seed in (0, 1, 2):
                par = bb == "parallel_cnn"
                acc = base + (0.05 + 0.01 * seed if par else 0)
                recs.append(record(
                    {"backbone": bb, "model": model, "seed": seed}, acc, acc, mode=model,
                    **{"interpretability/deletion_prob_auc_minus_shifted_gradcam_mel":
                       -0.1 - (0.02 if par and model == "mid_two_way" else 0),
                       "interpretability/sanity_cascading_gradcam_mel": 0.1 * seed,
                       "ablation/acc_mel_zeroed": 0.3}))
    trials, table = aggregate(recs, spec)
    md = render_markdown(table, trials, recs, spec, {"planned": 12, "ok": 12, "failed": 0})
    lines = md.splitlines()
    head = lines.index("## Paired contrast: backbone = parallel_cnn minus serial_cnn")
    assert lines[head + 4] == "| metric | model=mid_two_way | model=late_fusion |"
    acc = next(ln for ln in lines[head:] if ln.startswith("| test/acc_clip |"))
    # +5, +6, +7 points over the three seeds in both modes: t-test CI 6 -+ 2.48
    assert acc.count("+6.00 [+3.52, +8.48], p 0.009") == 2
    dele = next(ln for ln in lines[head:] if ln.startswith("| deletion_gradcam_mel |"))
    assert dele == ("| deletion_gradcam_mel | -0.020 [-0.020, -0.020], p - "
                    "| +0.000 [+0.000, +0.000], p 1.000 |")
    assert any(ln.startswith("| sanity_cascading_gradcam_mel | +0.000") for ln in lines[head:])
    assert not any("mel_zeroed" in ln for ln in lines[head:head + 12])  # ablations: own table
    assert "with parallel_cnn" in lines[head + 2]


def test_gtzan_modes_runs_sixty_distinct_trials_not_ninety(capsys):
    r = call_cli("experiments.sweep", "sweep=gtzan_modes", "backend=local", "dry_run=true")
    assert r.returncode == 0, r.stderr
    s = last_json(r.stdout)
    assert s["trials"] == 60 and s["collapsed"] == 30 and s["expanded"] == 90
    assert "60 distinct trials (30 repeats collapsed)" in r.stdout
    assert "model=late_fusion model.tap=3 seed=4" in r.stdout and "(ignores model.tap)" in r.stdout
    trials, collapsed = plan(load_sweep("gtzan_modes"))
    assert sum(t["model"] == "late_fusion" for t in trials) == 5
    assert all("model.tap" not in t for t in trials if t["model"] not in MID_MODES)
    assert sum(t["model"] == "mid_two_way" for t in trials) == 15


def test_tap_counts_for_late_fusion_once_its_width_follows_a_mid_mode():
    spec = load_sweep("capacity_matched")
    trials, collapsed = plan(spec)
    assert len(trials) == 60 and not collapsed
    # ...and the same words given on the command line count like sweep parameters.
    lf = [{"model": "late_fusion", "model.tap": t} for t in (1, 2, 3)]
    assert len(distinct_trials(lf)[0]) == 1
    assert len(distinct_trials(lf, ["backbone.match_params=mid_two_way"])[0]) == 3
    assert len(expand(spec)) == 60


def test_run_identity_ignores_the_tap_only_where_the_mode_does():
    def h(*words):
        return config_hash(compose(["data=gtzan", *words]))

    assert h("model=late_fusion", "model.tap=1") == h("model=late_fusion", "model.tap=3")
    assert h("model=mel_only", "model.tap=1") == h("model=mel_only", "model.tap=3")
    assert h("model=mid_two_way", "model.tap=1") != h("model=mid_two_way", "model.tap=3")
    m = "backbone.match_params=mid_two_way"
    assert h("model=late_fusion", "model.tap=1", m) != h("model=late_fusion", "model.tap=3", m)
    assert set(MID_MODES) == {name for name, cls in MODES.items() if cls.receives}


def test_run_identity_and_name_of_the_join():
    from experiments.run_dirs import run_name

    def h(*words):
        return config_hash(compose(["data=gtzan", *words]))

    assert h("model=late_fusion", "model.join=film") == h("model=late_fusion")
    assert h("model=mid_two_way", "model.join=film") != h("model=mid_two_way")
    film, broadcast = "model.join=film", "model.join=broadcast"
    assert h("model=mid_two_way", broadcast) != h("model=mid_two_way", film)
    # The default join leaves the identity of runs made before there was a choice.
    from omegaconf import OmegaConf

    cfg = compose(["data=gtzan", "model=mid_two_way"])
    OmegaConf.set_struct(cfg, False)
    del cfg.model["join"]
    assert config_hash(cfg) == h("model=mid_two_way")
    name = run_name(compose(["data=gtzan", "model=mid_two_way", "model.join=film"]))
    assert "-tap2-film-seed0-" in name
    assert "-tap2-seed0-" in run_name(compose(["data=gtzan", "model=mid_two_way"]))
    trials = [{"model": m, "model.join": j} for m in ("late_fusion", "mid_into_mel")
              for j in ("concat", "broadcast", "film")]
    assert len(distinct_trials(trials)[0]) == 4


@pytest.mark.parametrize("tap", [1, 2, 3])
def test_capacity_matched_widths_are_within_five_percent(tap):
    from experiments.builders import model_kwargs
    from lightning_modules import build_model
    from lightning_modules.capacity import count_params

    labels = [str(i) for i in range(10)]
    bins = {"mel": 128, "chroma": 12}

    def params(mode, *words):
        cfg = compose(["data=gtzan", f"model={mode}", f"model.tap={tap}", *words])
        return count_params(build_model(mode, **model_kwargs(cfg, labels, bins)))

    target = params("mid_two_way")
    plain = params("late_fusion")
    assert plain < target * (0.99 if tap > 1 else 1.0)  # tap 2 and 3 add parameters
    for mode in ("late_fusion", "mel_only", "chroma_only"):
        matched = params(mode, "backbone.match_params=mid_two_way")
        assert abs(matched - target) <= 0.05 * target, (mode, matched, target)
    assert params("mid_two_way", "backbone.match_params=mid_two_way") == target
    assert params("late_fusion", "backbone.width=2.0") > 3 * plain


def test_an_unknown_paired_test_is_refused():
    r = call_cli("experiments.sweep", "sweep=gtzan_modes", "dry_run=true", "paired_test=z")
    assert r.returncode == 2 and "paired_test=z: choose one of ttest, wilcoxon" in r.stderr


def test_capacity_matched_sweep_is_registered_with_its_knob():
    cfg = OmegaConf.create(load_sweep("capacity_matched")["parameters"])
    assert cfg["backbone.match_params"].value == "mid_two_way"


def test_wandb_summary_table_carries_the_comparisons(tmp_path, monkeypatch):
    import glob

    from experiments.sweep_results import log_to_wandb, plot

    monkeypatch.setenv("WANDB_MODE", "offline")
    trials, table = aggregate(kfold_records(), KFOLD)
    cfg = compose(["logger.wandb.project=mlfi-test"])
    png = plot(table, KFOLD, tmp_path / "results.png", trials)
    run_dir = log_to_wandb(cfg, KFOLD, table, png, tmp_path)
    (path,) = glob.glob(f"{run_dir}/files/media/table/**/*.table.json", recursive=True)
    data = json.loads(open(path).read())
    cols = data["columns"]
    for c in ("runs", "repetitions", "params", "mflops", "delta vs late_fusion",
              "ci_low vs late_fusion", "p vs late_fusion", "test vs late_fusion",
              "delta vs chosen"):
        assert c in cols, c
    mid = next(r for r in data["data"] if r[cols.index("model")] == "mid_two_way")
    assert mid[cols.index("test vs late_fusion")] == "paired t-test (10 pairs)"
    assert mid[cols.index("repetitions")] == "5 folds x 2 seeds"


def test_float_noise_is_not_taken_for_variance():
    # 0.9 - 0.8, 0.8 - 0.7, 0.7 - 0.6 differ in the 17th digit: one difference, not a
    # spread with p ~ 1e-30.
    r = repetitions_test(np.float32([0.9, 0.8, 0.7]), np.float32([0.8, 0.7, 0.6]))
    assert r["p"] is None and "identical differences" in r["test"]
    assert r["ci_low"] == r["ci_high"] == pytest.approx(0.1)


def test_a_metric_reported_by_one_run_shows_no_std():
    recs = [record({"model": "mid_two_way", "seed": 0}, 0.9, 0.8, mode="mid_two_way"),
            record({"model": "mid_two_way", "seed": 1}, 0.8, None, mode="mid_two_way")]
    trials, table = aggregate(recs, KFOLD)
    md = render_markdown(table, trials, recs, KFOLD, {"planned": 2, "ok": 2, "failed": 0})
    row = next(ln for ln in md.splitlines() if ln.startswith("| mid_two_way"))
    assert "| 85.00 ± 7.07 | 80.00 |" in row  # validation over 2 runs, test over 1


def test_count_keeps_the_first_distinct_trials_and_their_repeats():
    trials, collapsed = plan(load_sweep("gtzan_modes"), count=10)
    assert len(trials) == 10 and all(t["model"] == "late_fusion" for t in trials[:5])
    assert collapsed and all(c["same_as"] in trials for c in collapsed)


def test_seed_ensemble_averages_probabilities_per_fold(tmp_path):
    def preds(name, rows):
        df = pd.DataFrame(rows, columns=["clip_id", "genre", "p_rock", "p_jazz"])
        df["predicted"] = np.where(df["p_rock"] > df["p_jazz"], "rock", "jazz")
        df.to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    recs = []
    # fold 0: each seed gets one of two clips wrong, confidently right on the other; the
    # average is right on both. fold 1: both seeds wrong on the one clip.
    folds = {0: ([("a", "rock", 0.9, 0.1), ("b", "jazz", 0.6, 0.4)],
                 [("a", "rock", 0.4, 0.6), ("b", "jazz", 0.05, 0.95)]),
             1: ([("c", "rock", 0.3, 0.7)], [("c", "rock", 0.2, 0.8)])}
    for fold, (s0, s1) in folds.items():
        for seed, rows in ((0, s0), (1, s1)):
            acc = float(np.mean([(p > q) == (g == "rock") for _, g, p, q in rows]))
            recs.append(record({"model": "late_fusion", "data.fold": fold, "seed": seed}, acc,
                               acc, mode="late_fusion",
                               predictions_csv=preds(f"{fold}-{seed}.csv", rows)))
    _, table = aggregate(recs, KFOLD)
    row = table.iloc[0]
    assert row["test/acc_clip mean"] == pytest.approx(0.25)  # 0.5, 0.5, 0, 0
    assert row["ensemble test acc_clip"] == pytest.approx((1.0 + 0.0) / 2)
    assert row["ensemble members"] == 2


def test_the_plot_legend_hides_no_bar_and_names_the_chosen_setting():
    import matplotlib.pyplot as plt

    from experiments.sweep_results import figure

    trials, table = aggregate(kfold_records(), KFOLD)
    fig = figure(table, KFOLD, trials)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches]
    assert bars and not any(legend.overlaps(b) for b in bars)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    chosen = table.loc[table["chosen"], "model"].tolist()
    assert [t for t in ticks if t.endswith("(chosen)")] == [f"{chosen[0]} (chosen)"]
    plt.close(fig)
