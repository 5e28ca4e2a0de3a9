"""The main job: run a sweep of training runs and aggregate mean +- std per setting.

    python -m experiments.sweep [sweep=quickstart] [backend=local|wandb] [count=N] [parallel=1]

``backend=local`` (default) expands ``grid``/``random`` sweep files itself and runs each
trial as its own process with exactly the command a W&B agent would run
(``python -m experiments.train ${args_no_hyphens}``). Finished trials are recorded in
``<paths.output_dir>/sweeps/<name>/trials.jsonl`` and skipped when the sweep runs again; a
failed trial is recorded with its error and the sweep goes on. ``backend=wandb`` registers
the sweep with W&B and runs an agent (``agent=run``, ``count``) or prints the agent command
for cluster array jobs (``agent=print``). Results: ``results.md``, ``results.csv``,
``trials.csv`` and ``results.png`` in the sweep directory, a table on stdout, and a JSON
summary as the last stdout line.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import UserError
from experiments.config import REPO_ROOT, log, main_guard, print_summary
from experiments.sweeps import describe, expand, load_sweep, setting_of, trial_command, trial_key

DEFAULTS = {"sweep": "quickstart", "backend": "local", "count": None, "parallel": 1,
            "retry_failed": True, "agent": "run", "sweep_id": None, "trial": None}
METRICS = ("val/acc_clip", "test/acc_clip", "test/acc_segment", "test/f1_macro")
# Extra numeric summary keys aggregated when runs report them (interpretability sweeps).
EXTRA_PREFIXES = ("ablation/",)


# -- trial bookkeeping ---------------------------------------------------------------------
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


def _die_with_parent():
    """Linux: the trial gets SIGTERM if the sweep process dies (kill -9 included)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


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


def run_trial(spec, params, out: Path, env: dict, children: set) -> dict:
    key = trial_key(params)
    cmd = trial_command(spec, params, sys.executable)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(logs / f"{key}.out", "w") as fo, open(logs / f"{key}.err", "w") as fe:
        p = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdout=fo, stderr=fe,
                             stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        children.add(p)
        rc = p.wait()
        children.discard(p)
    record = {"key": key, "params": params, "command": cmd, "returncode": rc,
              "seconds": round(time.time() - t0, 1), "finished_at": time.time()}
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


def run_local(cfg, spec: dict, out: Path) -> dict:
    trials = expand(spec, count=cfg.count, seed=int(cfg.seed))
    state = TrialLog(out / "trials.jsonl")
    todo, skipped = [], 0
    selected = trials
    if cfg.trial is not None:  # one trial of the sweep (cluster array jobs)
        if not 0 <= int(cfg.trial) < len(trials):
            raise UserError(f"trial={cfg.trial}: sweep {spec['name']} has trials "
                            f"0..{len(trials) - 1}")
        selected = [trials[int(cfg.trial)]]
    for params in selected:
        prev = state.records.get(trial_key(params))
        if prev and (prev["status"] == "ok" or not cfg.retry_failed):
            skipped += 1
        else:
            todo.append(params)
    log(f"sweep {spec['name']}: {len(trials)} trials, {skipped} already finished, "
        f"{len(todo)} to run -> {out}")
    parallel = max(1, int(cfg.parallel))
    env = trial_env(cfg, spec, parallel)
    children: set = set()

    def stop(signum, frame):  # pass Ctrl-C / SIGTERM on to running trials
        for p in list(children):
            p.terminate()
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    done = [0]

    def one(params):
        log(f"[{spec['name']}] start  {describe(params)}")
        rec = run_trial(spec, params, out, env, children)
        state.add(rec)
        done[0] += 1
        res = (f"val/acc_clip {rec['summary'].get('val/acc_clip'):.3f} test/acc_clip "
               f"{rec['summary'].get('test/acc_clip'):.3f}" if rec["status"] == "ok"
               else f"FAILED: {rec['error'][:300]}")
        log(f"[{spec['name']}] {done[0]}/{len(todo)} done in {rec['seconds']:.0f} s  "
            f"{describe(params)}  {res}")
        return rec

    try:
        if parallel == 1:
            for params in todo:
                one(params)
        else:
            with ThreadPoolExecutor(parallel) as pool:
                list(pool.map(one, todo))
    finally:
        signal.signal(signal.SIGTERM, old)
    keys = [trial_key(p) for p in selected]
    return {"records": [state.records[k] for k in keys if k in state.records],
            "ran": len(todo), "skipped": skipped, "planned": len(trials)}


# -- aggregation ---------------------------------------------------------------------------
def _fmt(mean, std, n):
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def aggregate(records: list[dict], spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-trial table, per-setting table with mean/std/n and the chosen setting)."""
    rows = []
    extra = sorted({k for r in records if r["status"] == "ok" for k, v in r["summary"].items()
                    if k.startswith(EXTRA_PREFIXES) and isinstance(v, (int, float))})
    for r in records:
        if r["status"] != "ok":
            continue
        row = {**{f"param:{k}": v for k, v in r["params"].items()}, "key": r["key"],
               "setting": json.dumps(setting_of(r["params"]), sort_keys=True),
               "seconds": r["seconds"], "run_dir": r["summary"].get("run_dir")}
        for m in (*METRICS, *extra):
            v = r["summary"].get(m)
            row[m] = float("nan") if v is None else float(v)
        rows.append(row)
    trials = pd.DataFrame(rows)
    if trials.empty:
        return trials, trials
    groups = []
    for setting, g in trials.groupby("setting", sort=False):
        row = {"setting": setting, **json.loads(setting), "n_seeds": len(g)}
        for m in (*METRICS, *extra):
            vals = g[m].dropna().to_numpy()
            row[f"{m} mean"] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{m} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        groups.append(row)
    table = pd.DataFrame(groups)
    metric = spec["metric"]["name"]
    goal = spec["metric"].get("goal", "maximize")
    col = f"{metric} mean" if f"{metric} mean" in table else "val/acc_clip mean"
    best = table[col].idxmax() if goal == "maximize" else table[col].idxmin()
    table["chosen"] = False
    table.loc[best, "chosen"] = True
    return trials, table


def varying_keys(table: pd.DataFrame) -> list[str]:
    settings = [json.loads(s) for s in table["setting"]]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    vary = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    return vary or keys[:1]


def render_markdown(table, trials, records, spec, meta) -> str:
    vary = varying_keys(table)
    head = vary + ["seeds", "val clip acc %", "test clip acc %", "test segment acc %",
                   "test macro F1 %", ""]
    lines = [f"# Sweep `{spec['name']}`", "",
             f"{meta['planned']} trials ({meta['ok']} ok, {meta['failed']} failed); "
             f"metric `{spec['metric']['name']}` ({spec['metric'].get('goal', 'maximize')}); "
             "mean ± std over seeds (sample std). The chosen setting (★) is picked on "
             "validation only; its test score is reported, not used.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r.get(k)) for k in vary] + [str(r["n_seeds"])]
        cells += [_fmt(r[f"{m} mean"], r[f"{m} std"], r["n_seeds"]) for m in METRICS]
        cells.append("★" if r["chosen"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    extra = [c[:-5] for c in table.columns if c.endswith(" mean") and c[:-5] not in METRICS]
    if extra:
        lines += ["", "## Interpretability (mean ± std over seeds, %)", "",
                  "| " + " | ".join(vary + extra) + " |", "|" + "---|" * (len(vary) + len(extra))]
        for _, r in table.iterrows():
            lines.append("| " + " | ".join([str(r.get(k)) for k in vary] + [
                _fmt(r[f"{m} mean"], r[f"{m} std"], r["n_seeds"]) for m in extra]) + " |")
    fixed = {k: v for k, v in json.loads(table["setting"].iloc[0]).items() if k not in vary}
    lines += ["", f"Fixed for every trial: `{json.dumps(fixed)}`"]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- `{describe(r['params'])}`: {r['error'][:400]} (log: {r.get('log')})"
                  for r in failed]
    return "\n".join(lines) + "\n"


def render_terminal(table) -> str:
    vary = varying_keys(table)
    rows = [[str(r.get(k)) for k in vary] + [str(r["n_seeds"])]
            + [_fmt(r[f"{m} mean"], r[f"{m} std"], r["n_seeds"]) for m in
               ("val/acc_clip", "test/acc_clip", "test/f1_macro")] + ["*" if r["chosen"] else ""]
            for _, r in table.iterrows()]
    head = vary + ["seeds", "val acc_clip %", "test acc_clip %", "test f1_macro %", "chosen"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*r) for r in rows])


def plot(table, spec, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vary = varying_keys(table)
    names = [", ".join(str(r.get(k)) for k in vary) for _, r in table.iterrows()]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(table) + 2), 4.5))
    for off, m, color in ((-0.2, "val/acc_clip", "#8fb3d9"), (0.2, "test/acc_clip", "#1f5f99")):
        ax.bar(x + off, 100 * table[f"{m} mean"], 0.4, yerr=100 * table[f"{m} std"],
               capsize=3, label=m, color=color)
    for i, chosen in enumerate(table["chosen"]):
        if chosen:
            ax.annotate("chosen on val", (i, 100 * table["test/acc_clip mean"].iloc[i]),
                        xytext=(0, 12), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("clip accuracy (%), mean ± std over seeds")
    ax.set_title(f"sweep {spec['name']} ({', '.join(vary)})")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_to_wandb(cfg, spec, table: pd.DataFrame, png: Path, out: Path) -> str | None:
    if not cfg.logger.wandb.enabled:
        return None
    import wandb

    os.environ.setdefault("WANDB_MODE", str(cfg.logger.wandb.mode))
    run = wandb.init(project=cfg.logger.wandb.project, entity=cfg.logger.wandb.entity,
                     group=spec["name"], job_type="sweep-summary", name=f"{spec['name']}-summary",
                     tags=["sweep", spec["name"]], dir=str(out), reinit="finish_previous",
                     config={"sweep": spec})
    flat = table.drop(columns=["setting"]).copy()
    for c in flat.columns:
        if flat[c].dtype == object:
            flat[c] = flat[c].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    run.log({"results": wandb.Table(dataframe=flat), "results_plot": wandb.Image(str(png))})
    path = run.dir
    run.finish()
    return str(Path(path).parent)


def report(cfg, spec, res: dict, out: Path, t0: float) -> dict:
    records = res["records"]
    trials, table = aggregate(records, spec)
    meta = {"planned": res["planned"], "ok": sum(r["status"] == "ok" for r in records),
            "failed": sum(r["status"] != "ok" for r in records)}
    summary = {"sweep": spec["name"], "backend": "local", "out_dir": str(out),
               "trials": res["planned"], "ran": res["ran"], "skipped": res["skipped"], **meta}
    if table.empty:
        summary["error"] = "no trial finished; see the logs in " + str(out / "logs")
    else:
        trials.to_csv(out / "trials.csv", index=False)
        table.drop(columns=["setting"]).to_csv(out / "results.csv", index=False)
        (out / "results.md").write_text(render_markdown(table, trials, records, spec, meta))
        png = plot(table, spec, out / "results.png")
        print(render_terminal(table), flush=True)
        chosen = table[table["chosen"]].iloc[0]
        summary.update({
            "chosen": json.loads(chosen["setting"]),
            "chosen_val_acc_clip": round(float(chosen["val/acc_clip mean"]), 4),
            "chosen_test_acc_clip": round(float(chosen["test/acc_clip mean"]), 4),
            "results_md": str(out / "results.md"), "results_csv": str(out / "results.csv"),
            "plot": str(png)})
        summary["wandb_dir"] = log_to_wandb(cfg, spec, table, png, out)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


# -- W&B backend -----------------------------------------------------------------------
def wandb_logged_in() -> bool:
    """True when W&B credentials are available (env key, identity token or netrc)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def run_wandb(cfg, spec: dict) -> dict:
    if cfg.agent not in ("run", "print"):
        raise UserError(f"agent={cfg.agent!r}: choose run or print")
    if not wandb_logged_in():
        raise UserError(
            "backend=wandb needs a W&B login and this machine has none: run `wandb login` "
            "(or set WANDB_API_KEY), then run this again; or run the sweep without a server: "
            f"python -m experiments.sweep sweep={spec['name']} backend=local")
    import wandb

    w = cfg.logger.wandb
    sweep_id = cfg.sweep_id
    if not sweep_id:
        body = {k: v for k, v in spec.items() if k != "description"}
        sweep_id = wandb.sweep(body, project=w.project, entity=w.entity)
    path = "/".join(x for x in (w.entity, w.project, sweep_id) if x)
    count = cfg.count
    agent = ["wandb", "agent"] + (["--count", str(count)] if count else []) + [path]
    summary = {"sweep": spec["name"], "backend": "wandb", "sweep_id": sweep_id,
               "agent_command": " ".join(agent),
               "array_job": f"sbatch --array=1-N configs/slurm/sweep_agent.sbatch {path}"}
    if cfg.agent == "print":
        print(" ".join(agent), flush=True)
        return summary
    env = dict(os.environ, WANDB_MODE="online")
    rc = subprocess.call(agent, cwd=str(REPO_ROOT), env=env)
    summary["agent_returncode"] = rc
    return summary


def main(cfg) -> int:
    t0 = time.time()
    spec = load_sweep(str(cfg.sweep))
    if cfg.backend == "wandb":
        print_summary(run_wandb(cfg, spec))
        return 0
    if cfg.backend != "local":
        raise UserError(f"backend={cfg.backend!r}: choose local or wandb")
    out = Path(cfg.paths.output_dir) / "sweeps" / spec["name"]
    out.mkdir(parents=True, exist_ok=True)
    res = run_local(cfg, spec, out)
    if cfg.trial is not None:  # one array task: the aggregate is made by a later full run
        rec = res["records"][0] if res["records"] else {}
        print_summary({"sweep": spec["name"], "trial": int(cfg.trial), **rec})
        return 0 if rec.get("status") == "ok" else 1
    summary = report(cfg, spec, res, out, t0)
    print_summary(summary)
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main_guard(main, extra=DEFAULTS))
