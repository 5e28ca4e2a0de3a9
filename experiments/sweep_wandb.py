"""The W&B sweep backend: register the sweep with the server, then run or print its agent.

The registered spec is complete (:func:`registered_spec`): the default command is filled in
and the extra words given to the sweep are appended to it, so an agent's trials run what
the local backend would run. On a cluster, ``configs/slurm/sweep_agent.sbatch`` runs one
trial per array task (``experiments.sweep_slurm``).
"""
from __future__ import annotations

import os
import subprocess

from datamodules.errors import UserError
from experiments.config import REPO_ROOT
from experiments.sweep_files import registered_spec

# Words that only locate an existing sweep; they may come with sweep_id=.
LOCATING_KEYS = ("logger.wandb.project", "logger.wandb.entity")


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


def run_wandb(cfg, spec: dict, overrides: list[str] = ()) -> dict:
    """Register the sweep (unless ``sweep_id`` names one) and run an agent (``agent=run``,
    ``count``) or print its command (``agent=print``); returns the JSON summary."""
    if cfg.agent not in ("run", "print"):
        raise UserError(f"agent={cfg.agent!r}: choose run or print")
    if not wandb_logged_in():
        raise UserError(
            "backend=wandb needs a W&B login and this machine has none: run `wandb login` "
            "(or set WANDB_API_KEY), then run this again; or run the sweep without a server: "
            f"python -m experiments.sweep sweep={cfg.sweep} backend=local")
    sweep_id = cfg.sweep_id
    fixed = [w for w in overrides if not w.lstrip("-+").startswith(LOCATING_KEYS)]
    if sweep_id and fixed:
        raise UserError(
            f"{' '.join(fixed)}: sweep {sweep_id} is already registered with its command, so "
            "these words cannot reach its trials; drop them, or leave out sweep_id to register "
            "a new sweep whose trials get them")
    import wandb

    w = cfg.logger.wandb
    if not sweep_id:
        sweep_id = wandb.sweep(registered_spec(spec, overrides), project=w.project,
                               entity=w.entity)
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
