"""One W&B sweep trial per SLURM array task, kept across requeues.

    srun python -m experiments.sweep_slurm sweep_id=ENTITY/PROJECT/SWEEP_ID [key=value ...]

(``configs/slurm/sweep_agent.sbatch`` runs this.) ``wandb agent --count 1`` in a requeued
job would pull a new trial from the server and lose the interrupted one. Instead, on its
first start a task takes one trial from the server (``wandb.agent`` with a function), writes
the trial's record (W&B run id, parameters, the exact command) to
``<paths.output_dir>/sweeps/wandb/<sweep id>/<array job id>_<task id>.json`` *before*
starting it, and marks the record done with the exit code when the trial ends. A trial
killed by a signal stays "running". A requeued job keeps its ``SLURM_JOB_ID`` (and counts
``SLURM_RESTART_COUNT``): it finds its running record and runs that command again with
``train.resume=auto``, so the trial continues from its last checkpoint; a done record ends
the task at once. A record written under another job id (array job ids wrap) is stale: the
task pulls a new trial.

W&B does not resume a run inside a sweep: the first attempt stays in the sweep as a crashed
run, and the resumed trial logs to its own run, grouped by sweep id and tagged ``requeued``.
The finished trial's figures are in its run directory's ``summary.json`` either way.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import yaml

from datamodules.errors import UserError
from experiments.config import REPO_ROOT, log, main_guard, print_summary
from experiments.sweep_files import WANDB_DEFAULT_COMMAND, trial_command
from experiments.sweep_local import die_with_parent, leave_sigusr1_to_trials
from experiments.sweep_wandb import wandb_logged_in

# What the W&B agent sets for the trial it hands out (inherited by the trial process).
AGENT_VARS = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")
RESUME_WORD = "train.resume=auto"


def task_name(env: Mapping[str, str]) -> str:
    """``<array job id>_<task id>`` (``<job id>`` outside an array): stable across requeues."""
    if not env.get("SLURM_JOB_ID"):
        raise UserError("SLURM_JOB_ID is not set: experiments.sweep_slurm runs one trial per "
                        "SLURM job (sbatch configs/slurm/sweep_agent.sbatch ENTITY/PROJECT/ID); "
                        "outside SLURM run `wandb agent ENTITY/PROJECT/ID`")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return str(env["SLURM_JOB_ID"])


def record_path(output_dir: str | Path, sweep_path: str, env: Mapping[str, str]) -> Path:
    sweep_id = sweep_path.rstrip("/").rsplit("/", 1)[-1]
    return Path(output_dir) / "sweeps" / "wandb" / sweep_id / f"{task_name(env)}.json"


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a trial record ({e}); delete it to let this array task "
                        "pull a new trial") from None


def write_record(path: Path, record: dict) -> None:
    """Atomic: the file is either the old record or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def decide(record: dict | None, env: Mapping[str, str]) -> str:
    """"pull" a new trial, "resume" the recorded one, or "done" (it already ended)."""
    if record is None or str(record.get("slurm_job_id")) != str(env.get("SLURM_JOB_ID")):
        return "pull"
    return "done" if record.get("status") == "done" else "resume"


def read_params(path: str | Path) -> dict:
    """The trial's parameters from the agent's ``WANDB_SWEEP_PARAM_PATH`` file
    (``wandb_version: 1`` and ``{name: {value: v}}``)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return {k: v["value"] for k, v in raw.items() if isinstance(v, dict) and "value" in v}


def run_command(cmd: list[str], env: Mapping[str, str]) -> int:
    """Run a trial in the foreground (output to the job's log); its exit code."""
    return subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=dict(env),
                            preexec_fn=die_with_parent).wait()


def fetch_spec(sweep_path: str) -> dict:
    """The registered sweep's ``command`` (W&B's default when it has none) and ``program``."""
    import wandb

    config = wandb.Api().sweep(sweep_path).config
    return {"command": list(config.get("command") or WANDB_DEFAULT_COMMAND),
            "program": config.get("program", "")}


def resume_env(record: dict, env: Mapping[str, str]) -> dict:
    """The environment of a resumed trial: outside the sweep (W&B does not resume a sweep
    run), grouped by sweep id."""
    out = {k: v for k, v in env.items() if k not in AGENT_VARS}
    out.update(WANDB_RUN_GROUP=record["sweep_id"],
               WANDB_TAGS=f"sweep,{record['sweep_id']},requeued")
    return out


def _finish(path: Path, record: dict, rc: int) -> int:
    if rc >= 0:  # a negative code is a kill (requeue, timeout): the task resumes it
        write_record(path, {**record, "status": "done", "returncode": rc,
                            "finished_at": time.time()})
    return rc


def pull_trial(sweep_path: str, path: Path, env: Mapping[str, str],
               agent: Callable | None = None, spec: dict | None = None,
               run: Callable = run_command) -> int:
    """Take one trial from the server, record it, run it; its exit code (0 when the server
    had no trial left)."""
    if agent is None:
        import wandb

        agent = wandb.agent
    spec = spec or fetch_spec(sweep_path)
    result: dict = {}

    def job():  # called by the agent with AGENT_VARS set in os.environ
        params = read_params(os.environ["WANDB_SWEEP_PARAM_PATH"])
        cmd = trial_command(spec, params, sys.executable)
        record = {"sweep": sweep_path, "sweep_id": os.environ["WANDB_SWEEP_ID"],
                  "run_id": os.environ["WANDB_RUN_ID"], "params": params, "command": cmd,
                  "status": "running", "slurm_job_id": env.get("SLURM_JOB_ID"),
                  "restart_count": int(env.get("SLURM_RESTART_COUNT") or 0),
                  "started_at": time.time()}
        write_record(path, record)
        log(f"trial {record['run_id']} of {sweep_path}: {' '.join(cmd)}")
        result["returncode"] = _finish(path, record, run(cmd, dict(os.environ)))

    agent(sweep_path, function=job, count=1)
    if "returncode" not in result:
        log(f"the W&B server gave no trial for {sweep_path} (finished, paused or stopped)")
    return int(result.get("returncode", 0))


def resume_trial(path: Path, record: dict, env: Mapping[str, str],
                 run: Callable = run_command) -> int:
    """Run the recorded trial again; an ``experiments.train`` command continues from its
    last checkpoint."""
    cmd = list(record["command"])
    if "experiments.train" in cmd and cmd[-1] != RESUME_WORD:
        cmd.append(RESUME_WORD)
    record = {**record, "restart_count": int(env.get("SLURM_RESTART_COUNT") or 0),
              "resumed_command": cmd}
    write_record(path, record)
    log(f"requeued: trial {record['run_id']} of {record['sweep']} again: {' '.join(cmd)}")
    return _finish(path, record, run(cmd, resume_env(record, env)))


def run_task(sweep_path: str, output_dir: str | Path, env: Mapping[str, str],
             agent: Callable | None = None, spec: dict | None = None,
             run: Callable = run_command) -> dict:
    """This array task's trial: pulled, resumed, or already done. Returns a summary with
    the action and the trial's exit code."""
    path = record_path(output_dir, sweep_path, env)
    record = read_record(path)
    action = decide(record, env)
    if action == "pull":
        rc = pull_trial(sweep_path, path, env, agent=agent, spec=spec, run=run)
    elif action == "resume":
        rc = resume_trial(path, record, env, run=run)
    else:
        log(f"trial {record['run_id']} of this task already ended (exit code "
            f"{record.get('returncode')}); nothing to run")
        rc = int(record.get("returncode") or 0)
    return {"sweep": sweep_path, "task": task_name(env), "action": action, "returncode": rc,
            "record": str(path)}


def main(cfg) -> int:
    if not cfg.sweep_id:
        raise UserError("sweep_id is missing: give the sweep path, sweep_id=ENTITY/PROJECT/ID "
                        "(printed by python -m experiments.sweep backend=wandb agent=print)")
    env = dict(os.environ)
    task_name(env)
    if not wandb_logged_in():
        raise UserError("this task needs a W&B login and the node has none: run `wandb login` "
                        "on the cluster (or export WANDB_API_KEY in the job), then resubmit")
    signal.signal(signal.SIGUSR1, leave_sigusr1_to_trials)
    summary = run_task(str(cfg.sweep_id), cfg.paths.output_dir, env)
    print_summary(summary)
    rc = summary["returncode"]
    return rc if rc >= 0 else 128 - rc  # killed by signal N: 128 + N, as a shell reports it


def cli(argv: list[str] | None = None) -> int:
    return main_guard(main, argv=argv, extra={"sweep_id": None})


if __name__ == "__main__":
    sys.exit(cli())
