"""The main job: run a sweep of training runs and aggregate mean +- std per setting.

    python -m experiments.sweep [sweep=quickstart] [backend=local|wandb] [count=N] [parallel=1]
                                [key=value ...]

Sweep words: ``sweep`` (a file in ``configs/sweeps`` or a path to one), ``backend``,
``count`` (the first N grid trials; random: N samples), ``parallel`` (trials at once; default:
the sweep file's ``local: {parallel: N}``, else 1), ``retry_failed``,
``trial`` (run only trial i: cluster array jobs), ``sweep_name`` (the sweep directory and
W&B group, default the file's ``name``: ``sweep_name=interpretability_gtzan`` keeps a run
on another ``data=`` beside the default one), ``seed`` (the sampling seed of
``method: random``), ``dry_run=true`` (list the trials, run nothing), ``paired_test``
(``ttest`` or ``wilcoxon``: how settings are compared over matched repetitions), and for
``backend=wandb`` ``agent=run|print`` and ``sweep_id``.

Trials that differ only in parameters their mode ignores (``model.tap`` for late fusion and
the single-input modes) are one trial: the sweep runs it once and says what it collapsed.

Every other ``key=value`` word is a config override appended to every trial's command, after
the sweep's parameters (so it wins over them): ``train.test=false``, ``data.root=/x``,
``logger.wandb.enabled=false``. It also applies to the sweep's own config (paths, W&B
summary run), and it is part of each trial's identity in the trial log: the same parameters
with other overrides are other trials.

``backend=local`` (default) expands ``grid``/``random`` sweep files itself and runs each
trial as its own process with exactly the command a W&B agent would run
(``python -m experiments.train ${args_no_hyphens}``). Finished trials are recorded in
``<paths.output_dir>/sweeps/<name>/trials.jsonl`` and skipped when the sweep runs again; a
failed trial is recorded with its error and the sweep goes on. ``backend=wandb`` registers
the sweep with W&B and runs an agent (``agent=run``, ``count``) or prints the agent command
for cluster array jobs (``agent=print``). Results: ``results.md``, ``results.csv``,
``trials.csv`` and ``results.png`` in the sweep directory, a table on stdout, and a JSON
summary as the last stdout line. Each setting is aggregated over its repetitions (seeds and
folds), sized (parameters, MFLOPs per segment) and compared with late fusion and with the
chosen setting by a paired test (``experiments/sweep_results.py``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from datamodules.errors import UserError
from experiments.config import main_guard, print_summary
from experiments.sweep_files import load_sweep
from experiments.sweep_local import dry_run, run_local
from experiments.sweep_results import report
from experiments.sweep_stats import TESTS
from experiments.sweep_wandb import run_wandb

DEFAULTS = {"sweep": "quickstart", "backend": "local", "count": None, "parallel": None,
            "retry_failed": True, "agent": "run", "sweep_id": None, "trial": None,
            "dry_run": False, "paired_test": "ttest", "sweep_name": None}
# Words the sweep itself reads; every other word is passed on to the trials.
SWEEP_WORDS = frozenset(DEFAULTS) | {"seed"}


def word_key(word: str) -> str:
    """The config key of a command-line word (``--a.b=v``, ``+a.b=v`` -> ``a.b``)."""
    return word.lstrip("-").split("=", 1)[0].lstrip("+")


def trial_overrides(argv: list[str]) -> list[str]:
    """The words of ``argv`` that are not sweep words, in order."""
    return [w for w in argv if word_key(w) not in SWEEP_WORDS]


def main(cfg, overrides: list[str] = ()) -> int:
    t0 = time.time()
    spec = load_sweep(str(cfg.sweep))
    if cfg.sweep_name:
        spec["name"] = str(cfg.sweep_name)
    if str(cfg.paired_test) not in TESTS:
        raise UserError(f"paired_test={cfg.paired_test}: choose one of {', '.join(TESTS)}")
    if cfg.dry_run:
        print_summary(dry_run(cfg, spec, overrides))
        return 0
    if cfg.backend == "wandb":
        print_summary(run_wandb(cfg, spec, overrides))
        return 0
    if cfg.backend != "local":
        raise UserError(f"backend={cfg.backend!r}: choose local or wandb")
    out = Path(cfg.paths.output_dir) / "sweeps" / spec["name"]
    out.mkdir(parents=True, exist_ok=True)
    if cfg.parallel is None:  # the sweep file's own default, else one trial at a time
        cfg.parallel = int(spec.get("local", {}).get("parallel", 1))
    res = run_local(cfg, spec, out, overrides)
    if cfg.trial is not None:  # one array task: the aggregate is made by a later full run
        rec = res["records"][0] if res["records"] else {}
        print_summary({"sweep": spec["name"], "trial": int(cfg.trial), **rec})
        return 0 if rec.get("status") == "ok" else 1
    summary = report(cfg, spec, res, out, t0, overrides)
    print_summary(summary)
    return 0 if summary.get("ok") else 1


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.sweep`` with ``argv`` (default: the command line); returns
    the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = trial_overrides(argv)

    def run(cfg) -> int:
        return main(cfg, overrides)

    return main_guard(run, argv=argv, extra=DEFAULTS)


if __name__ == "__main__":
    sys.exit(cli())
