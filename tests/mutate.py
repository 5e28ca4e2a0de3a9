"""Mutation testing of the modules that carry the evaluation protocol (``make mutate``).

    python -m tests.mutate [GROUP ...] [--out build/mutate]

Each group mutates a few modules with mutmut and runs each mutant against that group's own
tests only (mutmut then picks, per mutant, the tests among them that reach the mutated
function). A group runs in its own copy of the tracked files under ``--out`` so that the
groups do not share mutmut state; ``python -m tests.mutation_report --root
build/mutate/<group>/mutants`` shows any group again. Lines that only log or build an
error message are not mutated (their text is not protocol). Prints killed / survived per
module and a JSON line with every group's counts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.mutation_report import collect, score

REPO = Path(__file__).resolve().parents[1]
# group -> (modules to mutate, tests that judge them)
GROUPS = {
    "splits": (["datamodules/splits.py"],
               ["tests/test_splits.py", "tests/test_gtzan.py", "tests/test_fma.py"]),
    "segments": (["datamodules/segments.py", "datamodules/datamodule.py"],
                 ["tests/test_datamodule.py",
                  "tests/test_protocol.py::test_spec_augment_changes_training_batches_only"]),
    "voting_fusion": (["lightning_modules/metrics.py", "lightning_modules/fusion.py"],
                      ["tests/test_models.py"]),
    "gradcam_layer": (["lightning_modules/backbones.py"],
                      ["tests/test_protocol.py::"
                       "test_gradcam_reads_the_last_convolutional_map_of_every_backbone",
                       "tests/test_models.py"]),
    "train_test": (["experiments/train.py"],
                   ["tests/test_protocol.py::"
                    "test_the_test_split_is_scored_with_the_best_checkpoint_not_the_last",
                    "tests/test_protocol.py::"
                    "test_a_seed_fixes_the_figures_and_a_finished_run_is_not_trained_again",
                    "tests/test_protocol.py::test_the_seed_sets_the_initial_weights",
                    "tests/test_entrypoints.py"]),
}
SKIP_LINES = [r"^\s*log(\.info|\.warning)?\(", r"^\s*raise ", r"^\s*f?\"", r"^\s*print\("]


def setup_cfg(modules: list[str], tests: list[str]) -> str:
    def block(key, values):
        return f"{key} =\n" + "".join(f"    {v}\n" for v in values)

    return ("\n[mutmut]\n" + block("source_paths", ["datamodules/", "lightning_modules/",
                                                    "experiments/"])
            + block("only_mutate", modules) + block("also_copy", ["configs/", "benchmarks/"])
            + block("pytest_add_cli_args_test_selection", tests)
            # in-process: mutmut forks per mutant, so no xdist workers (setup.cfg's -n 2)
            + block("pytest_add_cli_args", ["-p", "no:cacheprovider", "-q", "-n", "0"])
            + block("do_not_mutate_patterns", SKIP_LINES))


def prepare_copy(group: str, out: Path) -> Path:
    """A fresh copy of the tracked files with this group's mutmut section."""
    modules, tests = GROUPS[group]
    work = out / group
    shutil.rmtree(work, ignore_errors=True)
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, work / f)
    with open(work / "setup.cfg", "a") as fh:
        fh.write(setup_cfg(modules, tests))
    return work


def run_group(group: str, out: Path) -> dict:
    work = prepare_copy(group, out)
    t0 = time.time()
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "WANDB_MODE": "offline"}
    with open(work / "mutmut.log", "w") as log:
        rc = subprocess.call([str(mutmut), "run"], cwd=work, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    counts, _ = collect(work / "mutants")
    seconds = round(time.time() - t0)
    print(f"[{group}] mutmut exit {rc} in {seconds} s (log: {work / 'mutmut.log'})",
          file=sys.stderr, flush=True)
    return {"group": group, "seconds": seconds, "returncode": rc,
            "modules": {m: dict(c) for m, c in counts.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="*", metavar="GROUP",
                    help=f"default: all of {', '.join(GROUPS)}")
    ap.add_argument("--out", default=str(REPO / "build" / "mutate"))
    a = ap.parse_args(argv)
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}: choose from {', '.join(GROUPS)}")
    out = Path(a.out)
    results = [run_group(g, out) for g in (a.groups or list(GROUPS))]
    cols = ("killed", "survived", "no tests", "timeout")
    print(f"{'group':<15}{'module':<34}" + "".join(f"{c:>10}" for c in cols) + f"{'score':>8}")
    for r in results:
        for module, c in r["modules"].items():
            c = Counter(c)
            print(f"{r['group']:<15}{module:<34}" + "".join(f"{c[k]:>10}" for k in cols)
                  + f"{100 * score(c):>7.1f}%")
    print(json.dumps(results))
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
