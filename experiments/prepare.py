"""Index a dataset and build its feature cache.

    python -m experiments.prepare data=gtzan data.root=DIR [index_only=true]

Prints what it found to stderr; the last stdout line is a JSON summary with ``dataset``,
``clips``, ``per_split``, ``skipped`` ([{"path", "reason"}]), ``cache_dir``, ``shapes``.
"""
from __future__ import annotations

import sys

from datamodules.prepare import prepare
from experiments.config import main_guard, print_summary


def main(cfg) -> int:
    print_summary(prepare(cfg, index_only=bool(cfg.index_only)).summary)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.prepare`` with ``argv`` (default: the command line)."""
    return main_guard(main, argv=argv, extra={"index_only": False})


if __name__ == "__main__":
    sys.exit(cli())
