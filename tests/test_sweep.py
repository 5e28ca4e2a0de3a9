import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from experiments.sweeps import args_no_hyphens, expand, load_sweep, trial_command
from tests.conftest import REPO, last_json, run_cli


def write_sweep(path, parameters, method="grid", **kw):
    spec = {"name": path.stem, "method": method,
            "metric": {"name": "val/acc_clip", "goal": "maximize"},
            "parameters": parameters,
            "command": ["${env}", "${interpreter}", "-m", "tests.fake_trial", "${args_no_hyphens}"],
            **kw}
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(path, *extra, env=None):
    return run_cli("experiments.sweep", f"sweep={path}", "logger.wandb.enabled=false", *extra,
                   env=env)


def test_shipped_sweeps_are_valid_wandb_files():
    for name in ("quickstart", "gtzan_modes", "gtzan_kfold", "fma_small_modes", "backbones"):
        spec = load_sweep(name)
        assert spec["command"][2:4] == ["-m", "experiments.train"]
        assert "${args_no_hyphens}" in spec["command"]
        trials = expand(spec)
        assert trials and all("seed" in t or "data.fold" in t for t in trials)
    quick = expand(load_sweep("quickstart"))
    assert {t["model"] for t in quick} == {"late_fusion", "mid_into_mel", "mid_into_chroma",
                                           "mid_two_way", "mel_only", "chroma_only"}
    assert len({t["seed"] for t in quick}) == 2
    assert len(expand(load_sweep("gtzan_modes"))) == 6 * 3 * 5


def test_command_is_what_an_agent_runs():
    spec = load_sweep("quickstart")
    cmd = trial_command(spec, {"model": "mid_two_way", "seed": 1, "model.tap": 2}, "/py")
    assert cmd == ["/py", "-m", "experiments.train", "model=mid_two_way", "seed=1", "model.tap=2"]
    assert args_no_hyphens({"data.ratios": [0.5, 0.5]}) == ["data.ratios=[0.5, 0.5]"]


def test_random_needs_count_and_bayes_points_to_wandb(tmp_path):
    p = write_sweep(tmp_path / "r.yaml", {"model.lr": {"distribution": "log_uniform_values",
                                                       "min": 1e-4, "max": 1e-2}}, method="random")
    trials = expand(load_sweep(str(p)), count=5)
    assert len(trials) == 5 and all(1e-4 <= t["model.lr"] <= 1e-2 for t in trials)
    b = write_sweep(tmp_path / "b.yaml", {"seed": {"values": [0]}}, method="bayes")
    r = sweep(b)
    assert r.returncode == 2 and "backend=wandb" in r.stderr


def test_local_sweep_aggregates_records_failures_and_resumes(tmp_path):
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
    out = tmp_path / "out" / "sweeps" / "toy"
    rows = list(csv.DictReader(open(out / "results.csv")))
    two_way = next(r for r in rows if r["model"] == "mid_two_way")
    assert float(two_way["val/acc_clip mean"]) == pytest.approx(0.91)
    assert float(two_way["val/acc_clip std"]) == pytest.approx(0.0141421, rel=1e-4)
    assert two_way["n_seeds"] == "2" and two_way["chosen"] == "True"
    md = (out / "results.md").read_text()
    assert "91.00 ± 1.41" in md and "Failed trials" in md and "something went wrong" in md
    assert "## Interpretability" in md and "45.00" in md  # ablation/* keys are aggregated too
    assert (out / "results.png").stat().st_size > 5000
    assert "mid_two_way" in r.stdout  # the table on the terminal
    first = [json.loads(x) for x in calls.read_text().splitlines()]
    assert len(first) == 6 and {c["group"] for c in first} == {"toy"}
    # Again: finished trials are skipped, failed ones retried.
    r2 = sweep(p, "retry_failed=false", env=env)
    s2 = last_json(r2.stdout)
    assert s2["skipped"] == 6 and s2["ran"] == 0
    assert len(calls.read_text().splitlines()) == 6


def test_killed_sweep_resumes_and_lists_each_trial_once(tmp_path):
    p = write_sweep(tmp_path / "slow.yaml", {
        "model": {"values": ["late_fusion", "mid_two_way"]}, "seed": {"values": [0, 1]},
        "sleep": {"value": 1.5}})
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


def test_wandb_backend_without_login_says_how(tmp_path):
    r = run_cli("experiments.sweep", "sweep=gtzan_modes", "backend=wandb",
                env={"HOME": str(tmp_path), "WANDB_API_KEY": "", "NETRC": str(tmp_path / "n"),
                     "MLFI_OUTPUT_DIR": str(tmp_path / "out")})
    assert r.returncode == 2
    assert "wandb login" in r.stderr and "backend=local" in r.stderr
    assert r.stdout == "" and not (tmp_path / "out").exists()
