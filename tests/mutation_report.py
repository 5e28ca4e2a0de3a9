"""Killed / survived mutants per module, from mutmut's results under ``mutants/``.

    python -m tests.mutation_report [--survivors]

Reads ``mutants/**/*.py.meta`` (written by ``mutmut run``; ``make mutate`` runs both) and
prints one row per mutated module: killed, survived, no covering test, timeout, other, and
the score killed / (killed + survived + no tests). ``--survivors`` lists the survivors'
names (``mutmut show NAME`` prints a diff). The last line is a JSON object of the counts.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# mutmut 3's exit-code convention (mutmut.stats.status_by_exit_code).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", None: "not checked"}
COLUMNS = ("killed", "survived", "no tests", "timeout", "other")


def collect(root: Path) -> tuple[dict[str, Counter], dict[str, list[str]]]:
    """Module path -> status counts, and module path -> surviving mutant names."""
    counts: dict[str, Counter] = {}
    survivors: dict[str, list[str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = str(meta.relative_to(root))[:-len(".meta")]
        data = json.loads(meta.read_text())
        c = Counter()
        for name, code in data.get("exit_code_by_key", {}).items():
            status = STATUS.get(code, "other")
            c[status if status in COLUMNS else "other"] += 1
            if status == "survived":
                survivors.setdefault(module, []).append(name)
        counts[module] = c
    return counts, survivors


def score(c: Counter) -> float:
    judged = c["killed"] + c["survived"] + c["no tests"]
    return c["killed"] / judged if judged else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="mutants")
    ap.add_argument("--survivors", action="store_true")
    a = ap.parse_args(argv)
    counts, survivors = collect(Path(a.root))
    if not counts:
        print(f"no mutmut results under {a.root}/: run `make mutate` first", file=sys.stderr)
        return 2
    print(f"{'module':<34}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'score':>8}")
    total = Counter()
    for module, c in counts.items():
        total += c
        print(f"{module:<34}" + "".join(f"{c[k]:>10}" for k in COLUMNS)
              + f"{100 * score(c):>7.1f}%")
    print(f"{'all':<34}" + "".join(f"{total[k]:>10}" for k in COLUMNS)
          + f"{100 * score(total):>7.1f}%")
    if a.survivors:
        for module, names in survivors.items():
            print(f"\n{module}: {len(names)} survived")
            for n in names:
                print(f"  {n}")
    print(json.dumps({m: dict(c) for m, c in counts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
