"""Sweep results: mean +- std per setting, the setting chosen on validation, and the reports.

Written to the sweep directory: ``trials.csv`` (one row per finished trial), ``results.csv``
and ``results.md`` (one row per setting), ``results.png`` (bars with error bars); a table on
the terminal; and a W&B run holding the table and the plot. A metric a trial did not report
(e.g. the test figures with ``train.test=false``) is missing, shown as "-".
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.sweep_files import describe, setting_of

METRICS = ("val/acc_clip", "test/acc_clip", "test/acc_segment", "test/f1_macro")
# Extra numeric summary keys aggregated when runs report them (interpretability sweeps).
EXTRA_PREFIXES = ("ablation/",)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(mean, std, n) -> str:
    """A fraction as "mean ± std" in percent (mean alone for one seed), "-" when missing."""
    if _missing(mean):
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _rounded(v):
    return None if _missing(v) else round(float(v), 4)


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
    table["chosen"] = False
    col = chosen_column(table, spec)
    if table[col].notna().any():
        goal = spec["metric"].get("goal", "maximize")
        best = table[col].idxmax() if goal == "maximize" else table[col].idxmin()
        table.loc[best, "chosen"] = True
    return trials, table


def chosen_column(table: pd.DataFrame, spec: dict) -> str:
    """The column the setting is chosen on: the sweep's metric, else validation accuracy."""
    metric = spec["metric"]["name"]
    return f"{metric} mean" if f"{metric} mean" in table else "val/acc_clip mean"


def varying_keys(table: pd.DataFrame) -> list[str]:
    settings = [json.loads(s) for s in table["setting"]]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    vary = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    return vary or keys[:1]


def render_markdown(table, trials, records, spec, meta, overrides: list[str] = ()) -> str:
    vary = varying_keys(table)
    head = vary + ["seeds", "val clip acc %", "test clip acc %", "test segment acc %",
                   "test macro F1 %", ""]
    lines = [f"# Sweep `{spec['name']}`", "",
             f"{meta['planned']} trials ({meta['ok']} ok, {meta['failed']} failed); "
             f"metric `{spec['metric']['name']}` ({spec['metric'].get('goal', 'maximize')}); "
             "mean ± std over seeds (sample std); \"-\": not reported by the runs. The chosen "
             "setting (★) is picked on validation only; its test score is reported, not used.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r.get(k)) for k in vary] + [str(r["n_seeds"])]
        cells += [fmt(r[f"{m} mean"], r[f"{m} std"], r["n_seeds"]) for m in METRICS]
        cells.append("★" if r["chosen"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    if not table["chosen"].any():
        lines += ["", f"No setting chosen: no trial reported `{chosen_column(table, spec)[:-5]}`."]
    extra = [c[:-5] for c in table.columns if c.endswith(" mean") and c[:-5] not in METRICS]
    if extra:
        lines += ["", "## Interpretability (mean ± std over seeds, %)", "",
                  "| " + " | ".join(vary + extra) + " |", "|" + "---|" * (len(vary) + len(extra))]
        for _, r in table.iterrows():
            lines.append("| " + " | ".join([str(r.get(k)) for k in vary] + [
                fmt(r[f"{m} mean"], r[f"{m} std"], r["n_seeds"]) for m in extra]) + " |")
    fixed = {k: v for k, v in json.loads(table["setting"].iloc[0]).items() if k not in vary}
    lines += ["", f"Fixed for every trial: `{json.dumps(fixed)}`"]
    if overrides:
        lines += ["", f"Added to every trial's command: `{' '.join(overrides)}`"]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- `{describe(r['params'])}`: {r['error'][:400]} (log: {r.get('log')})"
                  for r in failed]
    return "\n".join(lines) + "\n"


def render_terminal(table) -> str:
    vary = varying_keys(table)
    rows = [[str(r.get(k)) for k in vary] + [str(r["n_seeds"])]
            + [fmt(r[f"{m} mean"], r[f"{m} std"], r["n_seeds"]) for m in
               ("val/acc_clip", "test/acc_clip", "test/f1_macro")] + ["*" if r["chosen"] else ""]
            for _, r in table.iterrows()]
    head = vary + ["seeds", "val acc_clip %", "test acc_clip %", "test f1_macro %", "chosen"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt_row.format(*head), fmt_row.format(*("-" * w for w in widths))]
                     + [fmt_row.format(*r) for r in rows])


def plot(table, spec, path: Path) -> Path:
    """Validation and test clip accuracy per setting (a metric no trial reported is left
    out), the chosen setting marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vary = varying_keys(table)
    names = [", ".join(str(r.get(k)) for k in vary) for _, r in table.iterrows()]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(table) + 2), 4.5))
    colors = {"val/acc_clip": "#8fb3d9", "test/acc_clip": "#1f5f99"}
    shown = [m for m in colors if table[f"{m} mean"].notna().any()]
    width = 0.8 / max(1, len(shown))
    for j, m in enumerate(shown):
        ax.bar(x + (j - (len(shown) - 1) / 2) * width, 100 * table[f"{m} mean"].fillna(0.0),
               width, yerr=100 * table[f"{m} std"].fillna(0.0), capsize=3, label=m,
               color=colors[m])
    for i, chosen in enumerate(table["chosen"]):
        tops = [table[f"{m} mean"].iloc[i] for m in shown]
        tops = [t for t in tops if not _missing(t)]
        if chosen and tops:
            ax.annotate("chosen on val", (i, 100 * max(tops)), xytext=(0, 12),
                        textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("clip accuracy (%), mean ± std over seeds")
    ax.set_title(f"sweep {spec['name']} ({', '.join(vary)})")
    ax.set_ylim(0, 105)
    if shown:
        ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_to_wandb(cfg, spec, table: pd.DataFrame, png: Path, out: Path) -> str | None:
    """A ``sweep-summary`` W&B run with the results table and plot; returns its folder."""
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


def report(cfg, spec, res: dict, out: Path, t0: float, overrides: list[str] = ()) -> dict:
    """Write every report of a finished local sweep; returns the JSON summary."""
    records = res["records"]
    trials, table = aggregate(records, spec)
    meta = {"planned": res["planned"], "ok": sum(r["status"] == "ok" for r in records),
            "failed": sum(r["status"] != "ok" for r in records)}
    summary = {"sweep": spec["name"], "backend": "local", "out_dir": str(out),
               "trials": res["planned"], "ran": res["ran"], "skipped": res["skipped"], **meta}
    if overrides:
        summary["overrides"] = list(overrides)
    if table.empty:
        summary["error"] = "no trial finished; see the logs in " + str(out / "logs")
    else:
        trials.to_csv(out / "trials.csv", index=False)
        table.drop(columns=["setting"]).to_csv(out / "results.csv", index=False)
        (out / "results.md").write_text(
            render_markdown(table, trials, records, spec, meta, overrides))
        png = plot(table, spec, out / "results.png")
        print(render_terminal(table), flush=True)
        chosen = table[table["chosen"]]
        if chosen.empty:
            summary.update(chosen=None, chosen_val_acc_clip=None, chosen_test_acc_clip=None)
        else:
            row = chosen.iloc[0]
            summary.update(chosen=json.loads(row["setting"]),
                           chosen_val_acc_clip=_rounded(row["val/acc_clip mean"]),
                           chosen_test_acc_clip=_rounded(row["test/acc_clip mean"]))
        summary.update(results_md=str(out / "results.md"), results_csv=str(out / "results.csv"),
                       plot=str(png))
        summary["wandb_dir"] = log_to_wandb(cfg, spec, table, png, out)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary
