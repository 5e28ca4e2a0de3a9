"""Sweep results: one row per setting aggregated over its repetitions, the setting chosen on
validation, paired comparisons, capacity, and the reports.

A setting is every sweep parameter except those that index a repetition (``seed``,
``data.fold``): its row is the mean ± sample std over every repetition (seeds, folds or
both: "5 folds x 2 seeds"). The chosen setting has the best *mean* validation score. Each
setting is compared with the chosen one and with ``late_fusion`` (the thesis's baseline; the
late-fusion setting that shares most of its parameters) on test clip accuracy over matched
repetitions (:mod:`experiments.sweep_stats`).

Written to the sweep directory: ``trials.csv`` (one row per finished trial), ``results.csv``
and ``results.md`` (one row per setting), ``contrast.csv`` (below), ``results.png`` (bars
with error bars); a table on the terminal; and a W&B run holding the table and the plot. A
metric a trial did not report (e.g. the test figures with ``train.test=false``) is missing,
shown as "-".

A sweep file's ``contrast: <parameter>`` adds a paired section: the parameter's last value
minus its first (``backbone``: parallel_cnn - serial_cnn) within every setting of the other
parameters, on test clip accuracy and the interpretability keys of :data:`EXTRA_TABLES`.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.sweep_files import describe, effective_params, repetition_of, setting_of
from experiments.sweep_stats import compare, ensemble_accuracy

METRICS = ("val/acc_clip", "test/acc_clip", "test/acc_segment", "test/f1_macro")
# Extra numeric summary keys aggregated when runs report them (interpretability sweeps).
EXTRA_PREFIXES = ("ablation/", "interpretability/")
# The markdown tables of those keys: (title, key pattern, percent?). Every aggregated key is
# in results.csv; these are the ones a reader compares settings on.
EXTRA_TABLES = (
    ("Ablations (clip accuracy, %)", r"ablation/", True),
    ("Faithfulness: paired AUC difference of p(explained class) from the method's own map "
     "shifted at random (deletion < 0 and insertion > 0 are faithful)",
     r"interpretability/(deletion|insertion)_prob_auc_minus_shifted_", False),
    ("Sanity: rank correlation with the trained model's maps after full cascading "
     "randomisation (a method passes below 0.5)", r"interpretability/sanity_cascading_", False),
    ("Sanity: rank correlation with a model trained on permuted labels",
     r"interpretability/sanity_labels_", False),
    ("Texture vs shape: clip accuracy (%) at the largest distortion every perturbation "
     "reaches", r"interpretability/acc_at_matched_distortion_", True),
)
# The metric paired comparisons are made on, and the baseline every setting is compared with.
COMPARED = "test/acc_clip"
BASELINE = "late_fusion"
REFERENCES = ("chosen", BASELINE)
_REP_NAMES = {"seed": "seeds", "data.fold": "folds"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(mean, std, n) -> str:
    """A fraction as "mean ± std" in percent (mean alone from one value), "-" when
    missing."""
    if _missing(mean):
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _short(key: str) -> str:
    """A column title for an extra key: ``interpretability/deletion_prob_auc_minus_shifted_
    gradcam_mel`` -> ``deletion_gradcam_mel``."""
    key = re.sub(r"^(ablation|interpretability)/", "", key)
    return re.sub(r"_prob_auc_minus_shifted|^sanity_(cascading|labels)_|"
                  r"^acc_at_matched_distortion_", "", key)


def stat(r, m: str, percent: bool = True) -> str:
    """:func:`fmt` of metric ``m`` in table row ``r`` (its own count of values); without
    ``percent``, the values themselves to 3 decimals."""
    if percent:
        return fmt(r[f"{m} mean"], r[f"{m} std"], r[f"{m} n"])
    mean, std, n = r[f"{m} mean"], r[f"{m} std"], r[f"{m} n"]
    if _missing(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def _rounded(v):
    return None if _missing(v) else round(float(v), 4)


def repetitions_kind(reps: list[dict]) -> str:
    """What a setting's runs repeat over: "5 folds x 2 seeds", "3 seeds", "1 run"; with the
    run count first when the grid is incomplete ("7 runs: 5 folds x 2 seeds")."""
    parts, full = [], 1
    for key in ("data.fold", "seed"):
        distinct = {json.dumps(r.get(key)) for r in reps if key in r}
        if len(distinct) > 1:
            parts.append(f"{len(distinct)} {_REP_NAMES[key]}")
            full *= len(distinct)
    kind = " x ".join(parts) if parts else ("1 run" if len(reps) == 1 else f"{len(reps)} runs")
    if parts and full != len(reps):
        kind = f"{len(reps)} runs: {kind}"
    return kind


def _mode_of(record: dict) -> str | None:
    """The interaction mode a trial ran: from its summary, else from its parameters."""
    s, p = record.get("summary") or {}, record["params"]
    return s.get("mode") or p.get("model.mode") or p.get("model")


def aggregate(records: list[dict], spec: dict, test: str = "ttest"
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-trial table, per-setting table: mean/std over repetitions, their count and kind,
    params/MFLOPs, the chosen setting, and the paired comparisons)."""
    rows = []
    extra = sorted({k for r in records if r["status"] == "ok" for k, v in r["summary"].items()
                    if k.startswith(EXTRA_PREFIXES) and isinstance(v, (int, float))})
    for r in records:
        if r["status"] != "ok":
            continue
        s = r["summary"]
        params = effective_params(r["params"], r.get("overrides") or [])
        row = {**{f"param:{k}": v for k, v in params.items()}, "key": r["key"],
               "setting": json.dumps(setting_of(params), sort_keys=True),
               "rep": json.dumps(repetition_of(params), sort_keys=True),
               "mode": _mode_of(r), "seconds": r["seconds"], "run_dir": s.get("run_dir"),
               "predictions_csv": s.get("predictions_csv"),
               "params": s.get("params"), "mflops": s.get("mflops"),
               "protocol": json.dumps(s["protocol"], sort_keys=True)
               if s.get("protocol") else None}
        for m in (*METRICS, *extra):
            v = s.get(m)
            row[m] = float("nan") if v is None else float(v)
        rows.append(row)
    trials = pd.DataFrame(rows)
    if trials.empty:
        return trials, trials
    groups = []
    for setting, g in trials.groupby("setting", sort=False):
        reps = [json.loads(x) for x in g["rep"]]
        row = {"setting": setting, **json.loads(setting), "mode": g["mode"].iloc[0],
               "runs": len(g), "repetitions": repetitions_kind(reps)}
        for c in ("params", "mflops"):
            vals = g[c].dropna()
            row[c] = vals.iloc[0] if len(vals) else None
        for m in (*METRICS, *extra):
            vals = g[m].dropna().to_numpy()
            row[f"{m} mean"] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{m} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
            row[f"{m} n"] = len(vals)
        groups.append(row)
    table = pd.DataFrame(groups)
    table["chosen"] = False
    col = chosen_column(table, spec)
    if table[col].notna().any():
        # the sweep's goal applies to its own metric; the fallback (accuracy) is maximised
        own = col == f"{spec['metric']['name']} mean"
        goal = spec["metric"].get("goal", "maximize") if own else "maximize"
        best = table[col].idxmax() if goal == "maximize" else table[col].idxmin()
        table.loc[best, "chosen"] = True
    add_comparisons(table, trials, test)
    ens = [ensemble_accuracy(trials[trials["setting"] == st]) for st in table["setting"]]
    table["ensemble test acc_clip"] = [np.nan if a is None else a for a, _ in ens]
    table["ensemble members"] = [n for _, n in ens]
    return trials, table


def baseline_of(table: pd.DataFrame, i: int) -> int | None:
    """The row of the late-fusion setting that shares most parameters with row ``i``: ``i``
    itself for a late-fusion setting; None when the sweep has none, or two share equally
    many."""
    if table.loc[i, "mode"] == BASELINE:
        return i
    mine = json.loads(table.loc[i, "setting"])
    scored = []
    for j in table.index[table["mode"] == BASELINE]:
        other = json.loads(table.loc[j, "setting"])
        scored.append((sum(other.get(k) == v for k, v in mine.items()), j))
    if not scored:
        return None
    scored.sort(reverse=True)
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
        return None
    return scored[0][1]


def add_comparisons(table: pd.DataFrame, trials: pd.DataFrame, test: str = "ttest") -> None:
    """Columns ``<stat> vs <reference>`` (delta, ci_low, ci_high, p, test, pairs) for the
    chosen setting and the late-fusion baseline; the reference's own row is left empty."""
    chosen = table.index[table["chosen"]]
    for ref in REFERENCES:
        for c in ("delta", "ci_low", "ci_high", "p", "pairs"):
            table[f"{c} vs {ref}"] = np.nan
        table[f"test vs {ref}"] = None
        for i in table.index:
            j = (chosen[0] if len(chosen) else None) if ref == "chosen" else baseline_of(table, i)
            if j is None or j == i:
                continue
            res = compare(trials[trials["setting"] == table.loc[i, "setting"]],
                          trials[trials["setting"] == table.loc[j, "setting"]], COMPARED, test)
            if res is None:
                continue
            for c in ("delta", "ci_low", "ci_high", "p", "pairs"):
                table.loc[i, f"{c} vs {ref}"] = np.nan if res[c] is None else res[c]
            table.loc[i, f"test vs {ref}"] = res["test"]


def chosen_column(table: pd.DataFrame, spec: dict) -> str:
    """The column the setting is chosen on: the sweep's metric, else validation accuracy."""
    metric = spec["metric"]["name"]
    return f"{metric} mean" if f"{metric} mean" in table else "val/acc_clip mean"


def varying_keys(table: pd.DataFrame) -> list[str]:
    settings = [json.loads(s) for s in table["setting"]]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    vary = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    return vary or keys[:1]


def protocol_labels(trials: pd.DataFrame) -> list[str]:
    """The distinct protocols of the trials, folds left out (a k-fold sweep is one)."""
    from datamodules.splits import protocol_label

    return sorted({protocol_label(json.loads(p), fold=False)
                   for p in trials["protocol"].dropna()})


def protocol_line(trials: pd.DataFrame, table: pd.DataFrame) -> str:
    """The protocol of the figures: split (folds averaged), clip level, repetitions."""
    labels = protocol_labels(trials)
    where = "; ".join(labels) if labels else "split not reported by the runs"
    reps = ", ".join(sorted(set(table["repetitions"])))
    return (f"Protocol: {where}. Accuracy at clip level (the mean of a clip's segment "
            f"probabilities), except where marked segment; mean ± sample std over the "
            f"repetitions of each setting ({reps}).")


def _pp(v) -> str:
    return "-" if _missing(v) else f"{100 * v:+.2f}"


def _p(v) -> str:
    if _missing(v):
        return "-"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def cell(value) -> str:
    """A parameter value in a table: "-" for one a setting does not set (e.g. ``model.tap``
    of late fusion, which ignores it)."""
    return "-" if _missing(value) else str(value)


def capacity_cells(r) -> list[str]:
    params = "-" if _missing(r.get("params")) else f"{int(r['params']):,}"
    mflops = "-" if _missing(r.get("mflops")) else f"{float(r['mflops']):.1f}"
    return [params, mflops]


def ensemble_cell(r) -> str:
    """The seed ensemble's test clip accuracy and its size, "-" without one."""
    if _missing(r.get("ensemble test acc_clip")):
        return "-"
    return f"{100 * r['ensemble test acc_clip']:.2f} ({int(r['ensemble members'])} runs)"


def comparison_cells(r, ref: str) -> list[str]:
    """Δ (points), 95 % CI, p and the test name of row ``r`` against ``ref``."""
    if _missing(r.get(f"delta vs {ref}")):
        own = bool(r["chosen"]) if ref == "chosen" else r.get("mode") == ref
        return ["(reference)", "", "", ""] if own else ["-", "-", "-", "-"]
    lo, hi = r.get(f"ci_low vs {ref}"), r.get(f"ci_high vs {ref}")
    ci = "-" if _missing(lo) else f"[{_pp(lo)}, {_pp(hi)}]"
    return [_pp(r[f"delta vs {ref}"]), ci, _p(r.get(f"p vs {ref}")), str(r[f"test vs {ref}"])]


def _contrast_value(m: str, v) -> str:
    """A paired difference in a contrast cell: points for accuracies, else 3 decimals."""
    if _missing(v):
        return "-"
    return _pp(v) if ("acc" in m and "auc" not in m) else f"{v:+.3f}"


def contrast(trials: pd.DataFrame, spec: dict, test: str = "ttest") -> dict | None:
    """The paired differences of ``spec["contrast"]``'s last value minus its first within
    every setting of the other parameters: ``{"key", "a", "b", "groups", "rows"}`` with one
    row per metric (test clip accuracy, then the :data:`EXTRA_TABLES` keys) holding one
    :func:`~experiments.sweep_stats.compare` result per group; None without a contrast
    (:func:`~experiments.sweep_files.load_sweep` checks it names a parameter with two or
    more values) or without trials of both values in one group."""
    key = spec.get("contrast")
    if not key or trials.empty:
        return None
    values = spec["parameters"][key]["values"]
    first, last = values[0], values[-1]
    settings = trials["setting"].map(json.loads)
    group = settings.map(lambda s: json.dumps({k: v for k, v in s.items() if k != key},
                                              sort_keys=True))
    own = settings.map(lambda s: s.get(key))
    extra = [m for m in trials.columns if m.startswith(EXTRA_PREFIXES)
             and any(re.match(pat, m) for _, pat, _ in EXTRA_TABLES[1:])]
    groups = [g for g in dict.fromkeys(group)
              if {first, last} <= set(own[group == g])]
    if not groups:
        return None
    rows = []
    for m in (COMPARED, *extra):
        cells = []
        for g in groups:
            a = trials[(group == g) & (own == last)]
            b = trials[(group == g) & (own == first)]
            cells.append(compare(a, b, m, test))
        rows.append({"metric": m, "results": cells})
    return {"key": key, "a": last, "b": first, "groups": [json.loads(g) for g in groups],
            "rows": rows}


def contrast_frame(c: dict) -> pd.DataFrame:
    """:func:`contrast` as ``contrast.csv``: one row per metric and group."""
    rows = []
    for r in c["rows"]:
        for g, res in zip(c["groups"], r["results"]):
            rows.append({"metric": r["metric"], "group": json.dumps(g, sort_keys=True),
                         "contrast": f"{c['key']}={c['a']} - {c['key']}={c['b']}",
                         **{k: (res or {}).get(k) for k in
                            ("delta", "ci_low", "ci_high", "p", "pairs", "test")}})
    return pd.DataFrame(rows)


def render_contrast(c: dict) -> list[str]:
    """:func:`contrast` as a markdown section: one row per metric, one column per group."""
    vary = [k for k in c["groups"][0]
            if len({json.dumps(g.get(k)) for g in c["groups"]}) > 1]
    names = [" ".join(f"{k}={g.get(k)}" for k in vary) or "all" for g in c["groups"]]
    lines = ["", f"## Paired contrast: {c['key']} = {c['a']} minus {c['b']}", "",
             f"Within each setting of the other parameters, over matched repetitions (same "
             f"seed and fold): mean difference [95 % CI], p (two-sided, not corrected for "
             f"multiple comparisons). Accuracies in points; AUC differences and rank "
             f"correlations as they are (a negative deletion and a positive insertion "
             f"difference mean the method beats its shifted map by more with "
             f"{c['a']}; a lower correlation, a stronger sanity pass).", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in c["rows"]:
        m = r["metric"]
        cells = []
        for res in r["results"]:
            if res is None:
                cells.append("-")
                continue
            ci = "" if _missing(res.get("ci_low")) else \
                f" [{_contrast_value(m, res['ci_low'])}, {_contrast_value(m, res['ci_high'])}]"
            cells.append(f"{_contrast_value(m, res['delta'])}{ci}, p {_p(res.get('p'))}")
        label = re.sub(r"^(ablation|interpretability)/|_prob_auc_minus_shifted", "", m)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(table, trials, records, spec, meta, overrides: list[str] = (),
                    test: str = "ttest") -> str:
    vary = varying_keys(table)
    head = vary + ["runs", "params", "MFLOPs/segment", "val clip acc %", "test clip acc %",
                   "test segment acc %", "test macro F1 %", "seed ensemble test clip acc %", ""]
    lines = [f"# Sweep `{spec['name']}`", "", protocol_line(trials, table), "",
             f"{meta['planned']} trials ({meta['ok']} ok, {meta['failed']} failed"
             + (f"; {meta['collapsed']} repeats of the same config collapsed"
                if meta.get("collapsed") else "") + "); "
             f"metric `{spec['metric']['name']}` ({spec['metric'].get('goal', 'maximize')}); "
             "\"-\": not reported by the runs (or a parameter the setting does not use). The "
             "chosen setting (★) has the best mean validation score; its test score is "
             "reported, not used. Params: trainable parameters; MFLOPs: forward FLOPs of one "
             "segment (convolutions and linear layers). Seed ensemble: the runs' per-clip "
             "probabilities averaged over seeds (per fold, then the mean over folds).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [cell(r.get(k)) for k in vary] + [f"{r['runs']} ({r['repetitions']})"]
        cells += capacity_cells(r)
        cells += [stat(r, m) for m in METRICS]
        cells.append(ensemble_cell(r))
        cells.append("★" if r["chosen"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    if not table["chosen"].any():
        lines += ["", f"No setting chosen: no trial reported `{chosen_column(table, spec)[:-5]}`."]
    for ref, title in ((BASELINE, f"against `{BASELINE}` (the baseline)"),
                       ("chosen", "against the chosen setting")):
        if table[f"delta vs {ref}"].notna().any():
            chead = vary + ["Δ test clip acc (points)", "95 % CI", "p", "test"]
            lines += ["", f"## Paired comparisons {title}", "",
                      "Difference of test clip accuracy over matched repetitions (same seed "
                      "and fold); two-sided p, not corrected for multiple comparisons.", "",
                      "| " + " | ".join(chead) + " |", "|" + "---|" * len(chead)]
            for _, r in table.iterrows():
                lines.append("| " + " | ".join([cell(r.get(k)) for k in vary]
                                               + comparison_cells(r, ref)) + " |")
    extra = [c[:-5] for c in table.columns if c.endswith(" mean") and c[:-5] not in METRICS]
    if extra:
        lines += ["", "## Interpretability (mean ± std over repetitions)", "",
                  "Each run's best checkpoint on the test split (`callbacks.ablation`, "
                  "`callbacks.interpretability`); each run's `ablation.csv` and "
                  "`interpretability.csv` have 95 % bootstrap CIs over its clips."]
    for title, pattern, percent in EXTRA_TABLES:
        cols = [m for m in extra if re.match(pattern, m)]
        if not cols:
            continue
        names = [_short(m) for m in cols]
        lines += ["", f"### {title}", "",
                  "| " + " | ".join(vary + names) + " |", "|" + "---|" * (len(vary) + len(cols))]
        for _, r in table.iterrows():
            lines.append("| " + " | ".join([cell(r.get(k)) for k in vary]
                                           + [stat(r, m, percent) for m in cols]) + " |")
    c = contrast(trials, spec, test)
    if c is not None:
        lines += render_contrast(c)
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


def _delta_cell(r, ref: str) -> str:
    """Δ in points, "*" when p < 0.05."""
    d = r.get(f"delta vs {ref}")
    if _missing(d):
        return "ref" if (bool(r["chosen"]) if ref == "chosen" else r.get("mode") == ref) else "-"
    p = r.get(f"p vs {ref}")
    return _pp(d) + ("*" if not _missing(p) and p < 0.05 else "")


def render_terminal(table, trials=None) -> str:
    vary = varying_keys(table)
    rows = [[cell(r.get(k)) for k in vary] + [str(r["runs"])] + capacity_cells(r)
            + [stat(r, m) for m in ("val/acc_clip", "test/acc_clip", "test/f1_macro")]
            + [_delta_cell(r, BASELINE), _delta_cell(r, "chosen"), "*" if r["chosen"] else ""]
            for _, r in table.iterrows()]
    head = vary + ["runs", "params", "MFLOPs", "val acc_clip %", "test acc_clip %",
                   "test f1_macro %", f"Δ vs {BASELINE}", "Δ vs chosen", "chosen"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt_row.format(*head), fmt_row.format(*("-" * w for w in widths))]
    lines += [fmt_row.format(*r) for r in rows]
    if trials is not None:
        lines.append(protocol_line(trials, table))
    lines.append("Δ: test clip accuracy difference in points over matched repetitions; "
                 "*: p < 0.05 (tests named in results.md)")
    return "\n".join(lines)


def plot(table, spec, path: Path, trials=None) -> Path:
    """Validation and test clip accuracy per setting (a metric no trial reported is left
    out), the chosen setting marked; the legend stands outside the axes, clear of the bars."""
    import matplotlib.pyplot as plt

    fig = figure(table, spec, trials)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def figure(table, spec, trials=None):
    """The matplotlib figure of :func:`plot`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vary = varying_keys(table)
    names = [", ".join(cell(r.get(k)) for k in vary) + (" (chosen)" if r["chosen"] else "")
             for _, r in table.iterrows()]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(table) + 3), 4.8))
    colors = {"val/acc_clip": "#8fb3d9", "test/acc_clip": "#1f5f99"}
    shown = [m for m in colors if table[f"{m} mean"].notna().any()]
    width = 0.8 / max(1, len(shown))
    for j, m in enumerate(shown):
        ax.bar(x + (j - (len(shown) - 1) / 2) * width, 100 * table[f"{m} mean"].fillna(0.0),
               width, yerr=100 * table[f"{m} std"].fillna(0.0), capsize=3, label=m,
               color=colors[m])
    ax.set_xticks(x, names, rotation=30, ha="right")
    reps = ", ".join(sorted(set(table["repetitions"])))
    ax.set_ylabel(f"clip accuracy (%), mean ± std\nover {reps}")
    title = f"sweep {spec['name']} ({', '.join(vary)})"
    if trials is not None:
        labels = protocol_labels(trials)
        if len(labels) == 1:
            title += "\n" + labels[0]
    ax.set_title(title, fontsize=9)
    tops = [100 * (table[f"{m} mean"] + table[f"{m} std"].fillna(0.0)).max() for m in shown]
    ax.set_ylim(0, max([105.0] + [t + 3 for t in tops if not _missing(t)]))
    if shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


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
    trials, table = aggregate(records, spec, str(cfg.get("paired_test", "ttest")))
    meta = {"planned": res["planned"], "ok": sum(r["status"] == "ok" for r in records),
            "failed": sum(r["status"] != "ok" for r in records),
            "collapsed": res.get("collapsed", 0)}
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
            render_markdown(table, trials, records, spec, meta, overrides,
                            str(cfg.get("paired_test", "ttest"))))
        c = contrast(trials, spec, str(cfg.get("paired_test", "ttest")))
        if c is not None:
            contrast_frame(c).to_csv(out / "contrast.csv", index=False)
            summary["contrast_csv"] = str(out / "contrast.csv")
        png = plot(table, spec, out / "results.png", trials)
        print(render_terminal(table, trials), flush=True)
        chosen = table[table["chosen"]]
        if chosen.empty:
            summary.update(chosen=None, chosen_val_acc_clip=None, chosen_test_acc_clip=None)
        else:
            row = chosen.iloc[0]
            summary.update(chosen=json.loads(row["setting"]),
                           chosen_val_acc_clip=_rounded(row["val/acc_clip mean"]),
                           chosen_test_acc_clip=_rounded(row["test/acc_clip mean"]),
                           chosen_runs=int(row["runs"]),
                           chosen_repetitions=str(row["repetitions"]),
                           chosen_ensemble_test_acc_clip=_rounded(
                               row["ensemble test acc_clip"]))
        summary.update(results_md=str(out / "results.md"), results_csv=str(out / "results.csv"),
                       plot=str(png))
        summary["wandb_dir"] = log_to_wandb(cfg, spec, table, png, out)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary
