"""The sweep entry point with a stand-in trainer (tests/fake_trial.py): sweep files, trial
commands, aggregation, resume, extra overrides, missing figures and the W&B backend."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import yaml

from experiments.config import compose
from experiments.sweep import cli
from experiments.sweep_files import (
    DEFAULT_COMMAND,
    SWEEP_DIR,
    args_no_hyphens,
    available,
    expand,
    load_sweep,
    registered_spec,
    trial_command,
)
from tests.conftest import REPO, last_json

FAKE_COMMAND = ["${env}", "${interpreter}", "-m", "tests.fake_trial", "${args_no_hyphens}"]


def write_sweep(path, parameters, method="grid", **kw):
    spec = {"name": path.stem, "method": method,
            "metric": {"name": "val/acc_clip", "goal": "maximize"},
            "parameters": parameters, "command": FAKE_COMMAND, **kw}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def sweep(capsys, monkeypatch):
    """``python -m experiments.sweep sweep=PATH logger.wandb.enabled=false WORDS...``, run
    in this process; returns (returncode, stdout, stderr) like a finished process."""

    def run(path, *words, env=None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        rc = cli([f"sweep={path}", "logger.wandb.enabled=false", *words])
        out, err = capsys.readouterr()
        return types.SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return run


def test_shipped_sweeps_are_valid_wandb_files():
    names = available()
    assert len(names) == len(list(SWEEP_DIR.glob("*.yaml"))) >= 7
    for name in names:
        raw = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())
        assert "command" not in raw, f"{name}: the default command is filled in by the loader"
        spec = load_sweep(name)
        assert spec["command"] == list(DEFAULT_COMMAND) and spec["name"] == name
        body = registered_spec(spec)
        assert body["command"] == list(DEFAULT_COMMAND) and "description" not in body
        assert {"method", "metric", "parameters", "name"} <= set(body)
        trials = expand(spec)
        assert trials and all("seed" in t or "data.fold" in t for t in trials), name
        assert all(t.get("train.resume") == "auto" for t in trials), name
    quick = expand(load_sweep("quickstart"))
    assert {t["model"] for t in quick} == {"late_fusion", "mid_into_mel", "mid_into_chroma",
                                           "mid_two_way", "mel_only", "chroma_only"}
    assert len({t["seed"] for t in quick}) == 2
    assert len(expand(load_sweep("gtzan_modes"))) == 6 * 3 * 5


def test_command_is_what_an_agent_runs(tmp_path):
    spec = load_sweep("quickstart")
    params = {"model": "mid_two_way", "seed": 1, "model.tap": 2}
    cmd = trial_command(spec, params, "/py")
    assert cmd == ["/py", "-m", "experiments.train", "model=mid_two_way", "seed=1", "model.tap=2"]
    assert args_no_hyphens({"data.ratios": [0.5, 0.5]}) == ["data.ratios=[0.5, 0.5]"]
    # A null value reaches the trial as null, not as the string "None".
    assert args_no_hyphens({"data.train_crops_per_clip": None}) == \
        ["data.train_crops_per_clip=null"]
    assert compose(["data.train_crops_per_clip=null"]).data.train_crops_per_clip is None
    # Extra words come last (they win), locally and in the spec registered with W&B.
    words = ["train.test=false", "+trainer.limit_val_batches=2"]
    assert trial_command(spec, params, "/py", words) == cmd + words
    assert registered_spec(spec, words)["command"] == [*DEFAULT_COMMAND, *words]
    # A file's own command wins over the default.
    own = load_sweep(str(write_sweep(tmp_path / "own.yaml", {"seed": {"value": 0}})))
    assert own["command"] == FAKE_COMMAND


def test_random_needs_count_and_bayes_points_to_wandb(tmp_path, sweep):
    p = write_sweep(tmp_path / "r.yaml", {"model.lr": {"distribution": "log_uniform_values",
                                                       "min": 1e-4, "max": 1e-2}}, method="random")
    trials = expand(load_sweep(str(p)), count=5)
    assert len(trials) == 5 and all(1e-4 <= t["model.lr"] <= 1e-2 for t in trials)
    b = write_sweep(tmp_path / "b.yaml", {"seed": {"values": [0]}}, method="bayes")
    r = sweep(b)
    assert r.returncode == 2 and "backend=wandb" in r.stderr


def test_local_sweep_aggregates_records_failures_and_resumes(tmp_path, sweep):
    p = write_sweep(tmp_path / "toy.yaml", {
        "model": {"values": ["late_fusion", "mid_two_way", "broken"]},
        "seed": {"values": [0, 1]}})
    calls = tmp_path / "calls.jsonl"
    env = {"FAKE_TRIAL_CALLS": str(calls), "MLFI_OUTPUT_DIR": str(tmp_path / "out")}
    r = sweep(p, env=env)
    assert r.returncode == 0, r.stderr
    s = last_json(r.stdout)
    assert s["trials"] == 6 and s["ok"] == 4 and s["failed"] == 2
    assert s["chosen"] == {"model": "mid_two_way"}
    assert s["chosen_test_acc_clip"] == pytest.approx(0.9)
    out = tmp_path / "out" / "sweeps" / "toy"
    rows = list(csv.DictReader(open(out / "results.csv")))
    two_way = next(r for r in rows if r["model"] == "mid_two_way")
    assert float(two_way["val/acc_clip mean"]) == pytest.approx(0.91)
    assert float(two_way["val/acc_clip std"]) == pytest.approx(0.0141421, rel=1e-4)
    assert two_way["runs"] == "2" and two_way["repetitions"] == "2 seeds"
    assert two_way["chosen"] == "True"
    # Paired over seeds 0 and 1: test acc (0.89, 0.91) vs late fusion's (0.79, 0.81).
    assert float(two_way["delta vs late_fusion"]) == pytest.approx(0.10)
    assert two_way["test vs late_fusion"].startswith("paired t-test (2 pairs")
    md = (out / "results.md").read_text()
    assert "91.00 ± 1.41" in md and "Failed trials" in md and "something went wrong" in md
    assert "## Paired comparisons against `late_fusion`" in md and "| mid_two_way | +10.00 |" in md
    assert "## Interpretability" in md and "45.00" in md  # ablation/* keys are aggregated too
    faith = md.split("### Faithfulness")[1].split("###")[0]
    assert "deletion_gradcam_mel" in faith and "-0.225" in faith  # raw values, not percent
    sanity = md.split("### Sanity: rank correlation with the trained")[1].split("###")[0]
    assert "0.050 ± 0.071" in sanity  # seeds 0, 1: 0.0 and 0.1
    assert (out / "results.png").stat().st_size > 5000
    assert "mid_two_way" in r.stdout  # the table on the terminal
    first = [json.loads(x) for x in calls.read_text().splitlines()]
    assert len(first) == 6 and {c["group"] for c in first} == {"toy"}
    # Again: finished trials are skipped, failed ones kept with retry_failed=false.
    r2 = sweep(p, "retry_failed=false", env=env)
    s2 = last_json(r2.stdout)
    assert s2["skipped"] == 6 and s2["ran"] == 0
    assert len(calls.read_text().splitlines()) == 6


def test_a_sweep_file_sets_its_local_parallelism_and_the_command_line_wins(tmp_path, sweep):
    p = write_sweep(tmp_path / "par.yaml", {"seed": {"values": [0, 1]}}, local={"parallel": 2})
    assert "local" not in registered_spec(load_sweep(str(p)))  # not sent to W&B
    calls = tmp_path / "calls.jsonl"
    env = {"FAKE_TRIAL_CALLS": str(calls), "MLFI_OUTPUT_DIR": str(tmp_path / "out")}
    assert sweep(p, env=env).returncode == 0
    threads = {json.loads(x)["threads"] for x in calls.read_text().splitlines()}
    assert threads == {str(max(1, (os.cpu_count() or 2) // 2))}  # cores shared by 2 trials
    calls.unlink()
    assert sweep(p, "parallel=1", "model.lr=0.01", env=env).returncode == 0
    assert {json.loads(x)["threads"] for x in calls.read_text().splitlines()} == \
        {os.environ.get("OMP_NUM_THREADS")}  # one at a time: the environment's own
    assert load_sweep("quickstart")["local"]["parallel"] == 2


def test_extra_words_reach_every_trial_and_missing_test_figures_show_as_dash(tmp_path, sweep):
    p = write_sweep(tmp_path / "notest.yaml", {
        "model": {"values": ["late_fusion", "mid_two_way"]}, "seed": {"values": [0, 1]}})
    calls = tmp_path / "calls.jsonl"
    env = {"FAKE_TRIAL_CALLS": str(calls), "MLFI_OUTPUT_DIR": str(tmp_path / "out")}
    r = sweep(p, "train.test=false", "parallel=2", env=env)
    assert r.returncode == 0, r.stderr
    argvs = [json.loads(x)["argv"] for x in calls.read_text().splitlines()]
    # The sweep's own words stay with the sweep; the others end every trial's command.
    assert len(argvs) == 4 and all(a[-2:] == ["logger.wandb.enabled=false", "train.test=false"]
                                   for a in argvs)
    assert not any(w.startswith(("sweep=", "parallel=")) for a in argvs for w in a)
    s = last_json(r.stdout)
    assert s["ok"] == 4 and s["chosen"] == {"model": "mid_two_way"}
    assert s["chosen_val_acc_clip"] == pytest.approx(0.91) and s["chosen_test_acc_clip"] is None
    assert s["overrides"] == ["logger.wandb.enabled=false", "train.test=false"]
    assert "test/acc_clip -" in r.stderr  # the progress lines
    out = tmp_path / "out" / "sweeps" / "notest"
    md = (out / "results.md").read_text()
    two_way = next(ln for ln in md.splitlines() if ln.startswith("| mid_two_way"))
    assert two_way == "| mid_two_way | 2 (2 seeds) | - | - | 91.00 ± 1.41 | - | - | - | - | ★ |"
    assert "train.test=false" in md and "## Paired comparisons" not in md  # nothing to pair
    row = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith("mid_two_way"))
    # the terminal table: no params/MFLOPs or test figures reported; Δ needs test figures
    assert row == ["mid_two_way", "2", "-", "-", "91.00", "±", "1.41", "-", "-", "-", "ref",
                   "*"]
    assert (out / "results.png").stat().st_size > 5000
    # Other overrides make other trials; the same ones find them finished.
    assert last_json(sweep(p, "train.test=false", env=env).stdout)["skipped"] == 4
    assert last_json(sweep(p, env=env).stdout)["ran"] == 4
    assert len(calls.read_text().splitlines()) == 8


def test_progress_lines_show_the_value_an_override_replaces_one_per_line(tmp_path, sweep):
    p = write_sweep(tmp_path / "over.yaml", {
        "model": {"value": "late_fusion"}, "seed": {"values": [0, 1, 2, 3]}})
    env = {"MLFI_OUTPUT_DIR": str(tmp_path / "out")}
    r = sweep(p, "model=mid_two_way", "parallel=2", env=env)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("[over]")]
    # 4 starts and 4 ends, none run together by the two threads writing at once
    assert len(lines) == 8 and all(ln.count("[over]") == 1 for ln in lines)
    assert all("model=mid_two_way" in ln and "late_fusion" not in ln for ln in lines)
    assert sum("val/acc_clip 0.9" in ln for ln in lines) == 4  # the model that ran
    assert last_json(r.stdout)["chosen"] == {"model": "mid_two_way"}  # the reports, too
    assert "| mid_two_way |" in (tmp_path / "out/sweeps/over/results.md").read_text()


def test_a_contrast_needs_a_parameter_with_two_values(tmp_path, sweep):
    p = write_sweep(tmp_path / "bad.yaml", {"backbone": {"value": "serial_cnn"},
                                            "seed": {"values": [0, 1]}}, contrast="backbone")
    r = sweep(p, env={"MLFI_OUTPUT_DIR": str(tmp_path / "out")})
    assert r.returncode != 0
    assert "contrast: backbone needs a parameter 'backbone' with two or more" in r.stderr
    assert not (tmp_path / "out" / "sweeps" / "bad").exists()  # refused before any trial


def test_other_overrides_say_they_replace_the_reports_sweep_name_keeps_both(tmp_path, sweep):
    p = write_sweep(tmp_path / "two.yaml", {"seed": {"values": [0, 1]}})
    env = {"MLFI_OUTPUT_DIR": str(tmp_path / "out")}
    assert sweep(p, env=env).returncode == 0
    r = sweep(p, "model=mid_two_way", env=env)
    assert r.returncode == 0
    assert "also holds trials run with other overrides (logger.wandb.enabled=false)" in r.stderr
    assert "model=mid_two_way" in (tmp_path / "out/sweeps/two/results.md").read_text()
    r = sweep(p, "model=mel_only", "sweep_name=two_mel", env=env)
    assert r.returncode == 0 and "other overrides" not in r.stderr
    md = (tmp_path / "out/sweeps/two_mel/results.md").read_text()
    assert md.startswith("# Sweep `two_mel`") and "model=mel_only" in md
    assert "model=mid_two_way" in (tmp_path / "out/sweeps/two/results.md").read_text()


def test_no_setting_is_chosen_when_no_trial_reports_the_metric(tmp_path, sweep):
    p = write_sweep(tmp_path / "m.yaml", {"model": {"values": ["late_fusion", "mid_two_way"]}},
                    metric={"name": "test/acc_clip", "goal": "maximize"})
    r = sweep(p, "train.test=false", env={"MLFI_OUTPUT_DIR": str(tmp_path / "out")})
    assert r.returncode == 0, r.stderr
    s = last_json(r.stdout)
    assert s["ok"] == 2 and s["chosen"] is None and s["chosen_val_acc_clip"] is None
    md = (tmp_path / "out" / "sweeps" / "m" / "results.md").read_text()
    assert not [ln for ln in md.splitlines() if ln.endswith("★ |")]
    assert "No setting chosen: no trial reported `test/acc_clip`" in md


def test_killed_sweep_resumes_and_lists_each_trial_once(tmp_path, sweep):
    p = write_sweep(tmp_path / "slow.yaml", {
        "model": {"values": ["late_fusion", "mid_two_way"]}, "seed": {"values": [0, 1]},
        "sleep": {"value": 1.0}})
    env = dict(os.environ, MLFI_OUTPUT_DIR=str(tmp_path / "out"), WANDB_MODE="offline")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", f"sweep={p}",
                             "logger.wandb.enabled=false"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "out" / "sweeps" / "slow" / "trials.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-way through the second trial
    proc.wait()
    done = log.read_text().count("\n")
    assert 1 <= done < 4
    r = sweep(p, env={"MLFI_OUTPUT_DIR": str(tmp_path / "out")})
    s = last_json(r.stdout)
    assert s["ok"] == 4 and s["skipped"] == done and s["ran"] == 4 - done
    trials = list(csv.DictReader(open(tmp_path / "out" / "sweeps" / "slow" / "trials.csv")))
    assert len(trials) == 4 and len({t["key"] for t in trials}) == 4


def test_wandb_backend_without_login_says_how(tmp_path, capsys, monkeypatch):
    for k, v in {"HOME": str(tmp_path), "WANDB_API_KEY": "", "NETRC": str(tmp_path / "n"),
                 "MLFI_OUTPUT_DIR": str(tmp_path / "out")}.items():
        monkeypatch.setenv(k, v)
    assert cli(["sweep=gtzan_modes", "backend=wandb"]) == 2
    out, err = capsys.readouterr()
    assert "wandb login" in err and "backend=local" in err
    assert out == "" and not (tmp_path / "out").exists()


def test_wandb_backend_registers_a_complete_spec(tmp_path, capsys, monkeypatch):
    registered = []
    fake = types.SimpleNamespace(sweep=lambda body, project, entity: registered.append(
        (body, project, entity)) or "abc123")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_API_KEY", "test-key")
    rc = cli(["sweep=quickstart", "backend=wandb", "agent=print", "count=1", "train.test=false",
              "logger.wandb.entity=team"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    body, project, entity = registered[0]
    assert (project, entity) == ("mlfi-genre", "team") and "description" not in body
    assert body["command"] == [*DEFAULT_COMMAND, "train.test=false", "logger.wandb.entity=team"]
    assert body["parameters"] == load_sweep("quickstart")["parameters"]
    assert out.splitlines()[0] == "wandb agent --count 1 team/mlfi-genre/abc123"
    assert last_json(out)["sweep_id"] == "abc123"
    # An existing sweep's command is fixed: words for its trials are an error, not ignored.
    rc = cli(["sweep=quickstart", "backend=wandb", "agent=print", "sweep_id=abc123",
              "train.test=false", "logger.wandb.entity=team"])
    out, err = capsys.readouterr()
    assert rc == 2 and "train.test=false" in err and "entity=team" not in err
    assert len(registered) == 1


def test_a_kfold_sweep_is_one_setting_per_mode_over_its_folds(tmp_path, sweep):
    p = write_sweep(tmp_path / "cv.yaml", {
        "data.split": {"value": "kfold"}, "data.fold": {"values": [0, 1, 2, 3, 4]},
        "model": {"values": ["late_fusion", "mid_two_way"]}, "seed": {"values": [0, 1]}})
    r = sweep(p, env={"MLFI_OUTPUT_DIR": str(tmp_path / "out")})
    assert r.returncode == 0, r.stderr
    s = last_json(r.stdout)
    assert s["trials"] == 20 and s["ok"] == 20
    assert s["chosen"] == {"data.split": "kfold", "model": "mid_two_way"}  # no fold in it
    assert s["chosen_runs"] == 10 and s["chosen_repetitions"] == "5 folds x 2 seeds"
    rows = list(csv.DictReader(open(tmp_path / "out" / "sweeps" / "cv" / "results.csv")))
    assert [(r["model"], r["runs"]) for r in rows] == [
        ("late_fusion", "10"), ("mid_two_way", "10")]
    assert "data.fold" not in rows[0]
