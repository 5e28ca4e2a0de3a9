"""Entry points that start from a checkpoint: its stored config + command-line overrides."""
from __future__ import annotations

from pathlib import Path

from datamodules.errors import UserError
from experiments.config import ConfigError, _split_word, compose_on


def checkpoint_composer(defaults: dict):
    """A ``main_guard`` composer: ``checkpoint=PATH`` is required; other ``key=value`` words
    override the training config stored in the checkpoint; ``defaults`` are this entry
    point's own keys (``split``, ``files``, ``out``...)."""

    def compose(argv, extra=None):
        argv = list(argv)
        ckpt = None
        rest = []
        for w in argv:
            key, value, _ = _split_word(w)
            if key == "checkpoint":
                ckpt = value
            else:
                rest.append(w)
        if not ckpt:
            raise ConfigError("checkpoint=PATH is required (a .ckpt from a run's checkpoints/)")
        path = Path(ckpt).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist")
        stored = read_stored_config(path)
        own = {**defaults, "checkpoint": str(path.resolve())}
        return compose_on(stored, rest, extra=own)

    return compose


def read_stored_config(path: Path) -> dict:
    import torch

    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
    extra = (ck.get("hyper_parameters") or {}).get("extra") or {}
    if "config" not in extra:
        raise UserError(f"{path}: not a checkpoint written by experiments.train (no stored config)")
    return extra["config"]


def load_checkpoint_model(cfg):
    from lightning_modules import load_model

    model = load_model(cfg.checkpoint, map_location="cpu")
    model.eval()
    return model
