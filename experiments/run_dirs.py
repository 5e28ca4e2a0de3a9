"""Run identities and directories: which config keys define a run, its name, its folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import yaml
from omegaconf import OmegaConf

# Keys that do not change what a run computes (where it writes, how it logs, how fast).
_IDENTITY_EXCLUDE = ("paths", "logger", "train.resume", "train.run_name", "data.num_workers",
                     "data.store", "train.channels_last",
                     "cache", "features.device", "features.batch_size", "choices", "sweep")


# Modes whose branches join at ``model.tap`` (see lightning_modules/modes.py).
MID_MODES = ("mid_into_mel", "mid_into_chroma", "mid_two_way")


def ignored_keys(mode: str, match_params=None) -> tuple[str, ...]:
    """Config keys that do not change what a run of ``mode`` computes: ``model.tap`` and
    ``model.join`` for a mode without a middle-level join (``model.tap`` kept when
    ``backbone.match_params`` sizes the model after a mode at that tap)."""
    if str(mode) in MID_MODES:
        return ()
    return ("model.join",) if match_params else ("model.tap", "model.join")


def mode_of_choice(choice) -> str:
    """The ``model.mode`` a ``model=<choice>`` group file sets (``None``: the default
    group)."""
    from experiments.config import CONFIG_DIR

    if choice is None:
        choice = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())["defaults"]["model"]
    path = CONFIG_DIR / "model" / f"{choice}.yaml"
    if not path.is_file():
        return str(choice)
    return str((yaml.safe_load(path.read_text()) or {}).get("mode", choice))


def identity(cfg) -> dict:
    d = OmegaConf.to_container(cfg, resolve=True)
    for key in ignored_keys(cfg.model.mode, cfg.backbone.get("match_params")):
        node, leaf = key.split(".")
        d[node].pop(leaf, None)
    # The width knobs and the join at their defaults leave the identity of earlier runs unchanged.
    if d["backbone"].get("width") == 1.0:
        d["backbone"].pop("width")
    if d["model"].get("join") == "concat":
        d["model"].pop("join")
    if d["backbone"].get("match_params") is None:
        d["backbone"].pop("match_params", None)
    for key in _IDENTITY_EXCLUDE:
        node, *rest = key.split(".")
        if rest and isinstance(d.get(node), dict):
            d[node].pop(rest[0], None)
        elif not rest:
            d.pop(node, None)
    return d


def config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]


def run_name(cfg) -> str:
    if cfg.train.get("run_name"):
        return str(cfg.train.run_name)
    m = cfg.model
    tap = f"-tap{m.tap}" if str(m.mode).startswith("mid_") else ""
    if tap and m.get("join", "concat") != "concat":
        tap += f"-{m.join}"
    return f"{cfg.data.name}-{m.mode}-{cfg.backbone.name}{tap}-seed{cfg.seed}-{config_hash(cfg)}"


def run_dir_for(cfg) -> tuple[Path, bool]:
    """(run directory, resuming). ``train.resume=auto`` reuses this config's directory;
    otherwise a directory that already exists gets a numbered sibling."""
    base = Path(cfg.paths.output_dir) / "runs" / run_name(cfg)
    if str(cfg.train.resume) == "auto":
        return base, (base / "checkpoints" / "last.ckpt").is_file()
    if not base.exists() or _is_rank_nonzero():
        return base, False
    i = 2
    while (base.parent / f"{base.name}-{i}").exists():
        i += 1
    return base.parent / f"{base.name}-{i}", False


def _is_rank_nonzero() -> bool:
    """DDP children re-run the entry point: they must reuse rank 0's directory."""
    ranks = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return any(int(os.environ.get(v, "0")) > 0 for v in ranks)


@contextlib.contextmanager
def exclusive_run(cfg, run_dir: Path):
    """With ``train.resume=auto``, hold ``<run_dir>/.run.lock`` (an OS lock, released if the
    process dies) while training: another process with the same config waits for it, then
    finds the run complete (or resumes it from ``last.ckpt`` if the holder was killed).
    DDP children (rank > 0) share rank 0's run and take no lock."""
    if str(cfg.train.resume) != "auto" or _is_rank_nonzero():
        yield
        return
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logging.getLogger("experiments.train").info(
            f"another process is training {run_dir} (the same config); waiting for it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
