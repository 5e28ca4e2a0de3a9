"""One W&B sweep trial per SLURM array task (experiments.sweep_slurm): a requeued task
resumes its recorded trial instead of pulling a new one. The W&B agent and server are
stand-ins here: what they set for a trial is mimicked (run id, sweep id, parameter file)."""
import json
import os
import sys

import pytest
import yaml

from experiments.sweep_files import DEFAULT_COMMAND
from experiments.sweep_slurm import (
    AGENT_VARS,
    cli,
    decide,
    read_params,
    record_path,
    run_command,
    run_task,
)
from tests.conftest import last_json

SWEEP = "team/mlfi-genre/abc123"
JOB = {"SLURM_JOB_ID": "5001", "SLURM_ARRAY_JOB_ID": "5000", "SLURM_ARRAY_TASK_ID": "7"}
SPEC = {"command": list(DEFAULT_COMMAND) + ["train.test=false"]}


class FakeAgent:
    """``wandb.agent(path, function=f, count=1)``: hands out the next trial of ``trials``
    the way the W&B agent does (environment variables and a parameter file)."""

    def __init__(self, tmp_path, trials):
        self.tmp_path, self.trials, self.calls = tmp_path, list(trials), []

    def __call__(self, sweep_path, function, count):
        self.calls.append((sweep_path, count))
        if not self.trials:
            return
        run_id, params = self.trials.pop(0)
        path = self.tmp_path / "wandb" / "sweep-abc123" / f"config-{run_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("wandb_version: 1\n\n" + yaml.safe_dump(
            {k: {"value": v} for k, v in params.items()}, sort_keys=False))
        os.environ.update(WANDB_SWEEP_ID="abc123", WANDB_RUN_ID=run_id,
                          WANDB_SWEEP_PARAM_PATH=str(path))
        try:
            function()
        finally:
            for k in AGENT_VARS:
                os.environ.pop(k, None)


class FakeRun:
    """Stands in for the trial process: records (command, environment), returns codes."""

    def __init__(self, *codes):
        self.codes, self.calls = list(codes), []

    def __call__(self, cmd, env):
        self.calls.append((cmd, dict(env)))
        return self.codes.pop(0)


@pytest.mark.parametrize("record, env, action", [
    (None, JOB, "pull"),                                                   # first start
    (None, {**JOB, "SLURM_RESTART_COUNT": "1"}, "pull"),                   # died before pulling
    ({"slurm_job_id": "5001", "status": "running"}, {**JOB, "SLURM_RESTART_COUNT": "1"},
     "resume"),                                                            # requeued mid-trial
    ({"slurm_job_id": "5001", "status": "done"}, {**JOB, "SLURM_RESTART_COUNT": "2"}, "done"),
    ({"slurm_job_id": "4711", "status": "running"}, JOB, "pull"),          # stale: other job
])
def test_decide(record, env, action):
    assert decide(record, env) == action


def test_record_lives_per_sweep_and_array_task(tmp_path):
    assert record_path(tmp_path, SWEEP, JOB) == tmp_path / "sweeps/wandb/abc123/5000_7.json"
    assert record_path(tmp_path, "abc123", {"SLURM_JOB_ID": "9"}).name == "9.json"


def test_params_file_in_the_agents_format(tmp_path):
    p = tmp_path / "config-r1.yaml"
    p.write_text("wandb_version: 1\n\nmodel:\n  value: mid_two_way\nseed:\n  value: 2\n")
    assert read_params(p) == {"model": "mid_two_way", "seed": 2}


def test_requeued_task_resumes_its_trial_instead_of_pulling_a_new_one(tmp_path, monkeypatch):
    for k in AGENT_VARS:
        monkeypatch.delenv(k, raising=False)
    params = {"model": "mid_two_way", "seed": 1, "train.resume": "auto"}
    agent = FakeAgent(tmp_path, [("run-a", params), ("run-b", {"model": "late_fusion"})])
    # First start: one trial from the server, recorded before it runs, then killed (SIGTERM).
    run = FakeRun(-15)
    s = run_task(SWEEP, tmp_path, JOB, agent=agent, spec=SPEC, run=run)
    assert s["action"] == "pull" and s["returncode"] == -15 and agent.calls == [(SWEEP, 1)]
    cmd, env = run.calls[0]
    assert cmd == [sys.executable, "-m", "experiments.train", "model=mid_two_way", "seed=1",
                   "train.resume=auto", "train.test=false"]
    assert env["WANDB_RUN_ID"] == "run-a" and env["WANDB_SWEEP_ID"] == "abc123"
    rec = json.loads(record_path(tmp_path, SWEEP, JOB).read_text())
    assert rec["status"] == "running" and rec["run_id"] == "run-a" and rec["params"] == params
    assert rec["command"] == cmd and rec["slurm_job_id"] == "5001"
    # Requeued: the same job id, a restart count. The recorded trial runs again, resumed.
    requeued = {**JOB, "SLURM_RESTART_COUNT": "1", "WANDB_RUN_ID": "stale", "PATH": "/bin"}
    run = FakeRun(0)
    s = run_task(SWEEP, tmp_path, requeued, agent=agent, spec=SPEC, run=run)
    assert s["action"] == "resume" and s["returncode"] == 0 and len(agent.calls) == 1
    cmd2, env2 = run.calls[0]
    assert cmd2 == cmd + ["train.resume=auto"]
    assert not set(AGENT_VARS) & set(env2) and env2["PATH"] == "/bin"
    assert env2["WANDB_RUN_GROUP"] == "abc123" and "requeued" in env2["WANDB_TAGS"]
    rec = json.loads(record_path(tmp_path, SWEEP, JOB).read_text())
    assert rec["status"] == "done" and rec["returncode"] == 0 and rec["restart_count"] == 1
    # Requeued once more after the trial ended: nothing runs, no trial is pulled.
    run = FakeRun()
    s = run_task(SWEEP, tmp_path, {**JOB, "SLURM_RESTART_COUNT": "2"}, agent=agent, spec=SPEC,
                 run=run)
    assert s["action"] == "done" and s["returncode"] == 0
    assert run.calls == [] and len(agent.calls) == 1 and len(agent.trials) == 1


def test_a_failed_trial_is_done_and_an_empty_sweep_runs_nothing(tmp_path):
    agent = FakeAgent(tmp_path, [("run-a", {"seed": 0})])
    s = run_task(SWEEP, tmp_path, JOB, agent=agent, spec=SPEC, run=FakeRun(3))
    assert s["returncode"] == 3
    assert decide(json.loads(record_path(tmp_path, SWEEP, JOB).read_text()), JOB) == "done"
    other = {**JOB, "SLURM_ARRAY_TASK_ID": "8"}
    s = run_task(SWEEP, tmp_path, other, agent=agent, spec=SPEC, run=FakeRun())
    assert s == {**s, "action": "pull", "returncode": 0}
    assert not record_path(tmp_path, SWEEP, other).exists()


def test_the_trial_runs_as_a_child_process(tmp_path, monkeypatch):
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TRIAL_CALLS", str(calls))
    monkeypatch.setenv("WANDB_RUN_GROUP", "g")
    rc = run_command([sys.executable, "-m", "tests.fake_trial", "model=mid_two_way"], os.environ)
    assert rc == 0 and json.loads(calls.read_text())["argv"] == ["model=mid_two_way"]
    assert run_command([sys.executable, "-m", "tests.fake_trial", "fail=true"], os.environ) == 1


def test_outside_slurm_or_without_login_says_what_to_do(tmp_path, capsys, monkeypatch):
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(k, raising=False)
    assert cli([f"sweep_id={SWEEP}"]) == 2
    assert "SLURM_JOB_ID is not set" in capsys.readouterr().err
    assert cli([]) == 2 and "sweep_id=ENTITY/PROJECT/ID" in capsys.readouterr().err
    for k, v in {**JOB, "HOME": str(tmp_path), "WANDB_API_KEY": "",
                 "NETRC": str(tmp_path / "n")}.items():
        monkeypatch.setenv(k, v)
    assert cli([f"sweep_id={SWEEP}"]) == 2
    out, err = capsys.readouterr()
    assert "wandb login" in err and out == ""


def test_cli_prints_the_task_summary(tmp_path, capsys, monkeypatch):
    """The command line, with the record of a finished trial: no server is contacted."""
    for k, v in {**JOB, "WANDB_API_KEY": "test-key", "MLFI_OUTPUT_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    path = record_path(tmp_path, SWEEP, JOB)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"run_id": "run-a", "slurm_job_id": "5001", "status": "done",
                                "returncode": 0}))
    assert cli([f"sweep_id={SWEEP}"]) == 0
    s = last_json(capsys.readouterr().out)
    assert s["action"] == "done" and s["task"] == "5000_7" and s["record"] == str(path)
