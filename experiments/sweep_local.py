"""The local sweep backend: one process per trial, a trial log, resume by skipping.

Each trial runs exactly the command a W&B agent would run (:func:`trial_command`), with its
stdout/stderr in ``<sweep dir>/logs/<key>.{out,err}``; its last stdout line is its JSON
summary. Finished trials are appended to ``<sweep dir>/trials.jsonl`` and skipped when the
sweep runs again; a failed trial is recorded with its error and retried on the next run
(``retry_failed=false`` keeps it).
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datamodules.errors import UserError
from experiments.config import REPO_ROOT, log
from experiments.sweep_files import describe, plan, trial_command, trial_key


class TrialLog:
    """Append-only JSON lines; the latest record per trial key wins."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.records: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: ignore it
                    continue
                self.records[r["key"]] = r

    def add(self, record: dict) -> None:
        with self.lock:
            self.records[record["key"]] = record
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())


def die_with_parent():
    """Linux: the child gets SIGTERM if its parent dies (kill -9 included)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def leave_sigusr1_to_trials(signum, frame):
    """SLURM's ``--signal=SIGUSR1`` reaches every process of the job step; the trial
    (Lightning) checkpoints and requeues, so the process running it must not die of it."""
    log("SIGUSR1: left to the running trial (it checkpoints and requeues the job)")


def trial_env(cfg, spec: dict, parallel: int) -> dict:
    env = dict(os.environ)
    env.update({
        "MLFI_DATA_DIR": str(cfg.paths.data_dir), "MLFI_CACHE_DIR": str(cfg.paths.cache_dir),
        "MLFI_OUTPUT_DIR": str(cfg.paths.output_dir),
        "WANDB_RUN_GROUP": spec["name"], "WANDB_TAGS": f"sweep,{spec['name']}",
        "WANDB_MODE": os.environ.get("WANDB_MODE", str(cfg.logger.wandb.mode)),
        "WANDB_SILENT": "true",
    })
    if parallel > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // parallel))
    return env


def score(value) -> str:
    """A metric in a progress line: three decimals, or "-" when the run did not report it."""
    return "-" if value is None else f"{float(value):.3f}"


def run_trial(spec, params, out: Path, env: dict, children: set,
              overrides: list[str] = ()) -> dict:
    key = trial_key(params, overrides)
    cmd = trial_command(spec, params, sys.executable, overrides)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(logs / f"{key}.out", "w") as fo, open(logs / f"{key}.err", "w") as fe:
        p = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdout=fo, stderr=fe,
                             stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        children.add(p)
        rc = p.wait()
        children.discard(p)
    record = {"key": key, "params": params, "command": cmd, "returncode": rc,
              "seconds": round(time.time() - t0, 1), "finished_at": time.time()}
    if overrides:
        record["overrides"] = list(overrides)
    lines = [ln for ln in (logs / f"{key}.out").read_text().splitlines() if ln.strip()]
    summary = None
    if lines:
        try:
            summary = json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    if rc == 0 and isinstance(summary, dict):
        record.update(status="ok", summary=summary)
    else:
        err = (logs / f"{key}.err").read_text().strip().splitlines()
        record.update(status="failed", error=" | ".join(err[-3:]) or f"exit code {rc}",
                      log=str(logs / f"{key}.err"))
    return record


def run_local(cfg, spec: dict, out: Path, overrides: list[str] = ()) -> dict:
    """Run the trials not yet finished; returns the records of the selected trials (all,
    or ``cfg.trial`` alone) and the counts ``ran``, ``skipped``, ``planned``."""
    trials, collapsed = plan(spec, cfg.count, int(cfg.seed), overrides)
    state = TrialLog(out / "trials.jsonl")
    others = sorted({" ".join(r.get("overrides") or []) or "(none)"
                     for r in state.records.values()
                     if list(r.get("overrides") or []) != list(overrides)})
    if others and cfg.trial is None:
        log(f"sweep {spec['name']}: {out} also holds trials run with other overrides "
            f"({'; '.join(others)}); this run's reports replace theirs (their trials stay "
            f"in trials.jsonl). sweep_name=<name> keeps each in its own directory.")
    todo, skipped = [], 0
    selected = trials
    if cfg.trial is not None:  # one trial of the sweep (cluster array jobs)
        if not 0 <= int(cfg.trial) < len(trials):
            raise UserError(f"trial={cfg.trial}: sweep {spec['name']} has trials "
                            f"0..{len(trials) - 1}")
        selected = [trials[int(cfg.trial)]]
    for params in selected:
        prev = state.records.get(trial_key(params, overrides))
        if prev and (prev["status"] == "ok" or not cfg.retry_failed):
            skipped += 1
        else:
            todo.append(params)
    extra = f" (each with {' '.join(overrides)})" if overrides else ""
    same = f" ({len(collapsed)} repeats of the same config collapsed)" if collapsed else ""
    log(f"sweep {spec['name']}: {len(trials)} trials{same}, {skipped} already finished, "
        f"{len(todo)} to run{extra} -> {out}")
    parallel = max(1, int(cfg.parallel))
    env = trial_env(cfg, spec, parallel)
    children: set = set()

    def stop(signum, frame):  # pass Ctrl-C / SIGTERM on to running trials
        for p in list(children):
            p.terminate()
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, stop)
    old_usr1 = signal.signal(signal.SIGUSR1, leave_sigusr1_to_trials)
    done = [0]

    def one(params):
        log(f"[{spec['name']}] start  {describe(params, overrides)}")
        rec = run_trial(spec, params, out, env, children, overrides)
        state.add(rec)
        done[0] += 1
        if rec["status"] == "ok":
            s = rec["summary"]
            res = (f"val/acc_clip {score(s.get('val/acc_clip'))} "
                   f"test/acc_clip {score(s.get('test/acc_clip'))}")
        else:
            res = f"FAILED: {rec['error'][:300]}"
        log(f"[{spec['name']}] {done[0]}/{len(todo)} done in {rec['seconds']:.0f} s  "
            f"{describe(params, overrides)}  {res}")
        return rec

    try:
        if parallel == 1:
            for params in todo:
                one(params)
        else:
            with ThreadPoolExecutor(parallel) as pool:
                list(pool.map(one, todo))
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGUSR1, old_usr1)
    keys = [trial_key(p, overrides) for p in selected]
    return {"records": [state.records[k] for k in keys if k in state.records],
            "ran": len(todo), "skipped": skipped, "planned": len(trials),
            "collapsed": len(collapsed)}


def dry_run(cfg, spec: dict, overrides: list[str] = ()) -> dict:
    """Print the trials the sweep would run (and the repeats it collapses); run nothing."""
    trials, collapsed = plan(spec, cfg.count, int(cfg.seed), overrides)
    extra = f" {' '.join(overrides)}" if overrides else ""
    print(f"sweep {spec['name']}: {len(trials)} distinct trials"
          + (f" ({len(collapsed)} repeats collapsed)" if collapsed else ""), flush=True)
    for i, params in enumerate(trials):
        print(f"  [{i:3d}] {describe(params)}{extra}", flush=True)
    if collapsed:
        print("collapsed (the mode ignores the parameter; the same run as the trial shown):",
              flush=True)
        for c in collapsed:
            print(f"  {describe(c['params'])}  -> {describe(c['same_as'])}  "
                  f"(ignores {', '.join(c['ignored'])})", flush=True)
    return {"sweep": spec["name"], "dry_run": True, "trials": len(trials),
            "collapsed": len(collapsed), "expanded": len(trials) + len(collapsed)}
