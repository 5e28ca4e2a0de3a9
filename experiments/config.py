"""Config composition: ``configs/default.yaml`` + group selections + dot-list overrides.

Command-line words, in any order:
  ``group=name``        merge ``configs/<group>/<name>.yaml`` into section ``group``
                        (``data=gtzan``, ``model=mid_two_way``, ``trainer=ddp``)
  ``a.b=value``         set an existing key (``data.root=/x``, ``trainer.max_epochs=30``)
  ``+a.b=value``        add a key that does not exist yet
  ``--a.b=value``       the same, as W&B agents pass it with ``${args}``
Group selections apply first, then overrides, then interpolations are resolved. An unknown
key or group is an error that lists the valid ones. A group file may hold a ``_global_``
mapping: it is merged at the top level (e.g. the synthetic demo's CPU-sized features).
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
# Groups whose files are not run configs (W&B sweep files live here too).
_NOT_GROUPS = {"sweeps", "slurm"}

OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)


class ConfigError(ValueError):
    """A command line or config file that cannot be composed; the message says what to fix."""


def groups(config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """Group name -> available option names (file stems)."""
    out = {}
    for d in sorted(p for p in config_dir.iterdir() if p.is_dir() and p.name not in _NOT_GROUPS):
        out[d.name] = sorted(f.stem for f in d.glob("*.yaml"))
    return out


def _split_word(word: str) -> tuple[str, str, bool]:
    """'--a.b=v' / 'a.b=v' / '+a.b=v' -> (key, value, add)."""
    w = word.lstrip("-") if word.startswith("--") else word
    if "=" not in w:
        raise ConfigError(
            f"cannot read argument {word!r}: expected key=value (e.g. data=gtzan or "
            f"trainer.max_epochs=30)")
    key, value = w.split("=", 1)
    add = key.startswith("+")
    key = key.lstrip("+")
    if not key:
        raise ConfigError(f"cannot read argument {word!r}: empty key")
    return key, value, add


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return cfg


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """' Did you mean `x`?' for the closest of ``choices`` (``prefix.x`` when given), or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" Did you mean `{prefix + '.' if prefix else ''}{close[0]}`?"


def _check_key(cfg: DictConfig, key: str) -> None:
    """Raise ConfigError when ``key`` (dotted) is not in ``cfg``, listing the valid keys."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        if isinstance(node, DictConfig):
            if part not in node:
                keys = sorted(str(k) for k in node.keys())
                hint = did_you_mean(part, keys, prefix=".".join(parts[:i]))
                raise ConfigError(
                    f"unknown config key {key!r}: {part!r} is not in {where}.{hint} "
                    f"Valid keys there: {', '.join(keys) or '(none)'}. (Prefix with + to add "
                    f"a new key.)")
            node = node._get_node(part)
            node = node if isinstance(node, (DictConfig, ListConfig)) else None
        elif isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"unknown config key {key!r}: {where} is a list of "
                                  f"{len(node)} items")
            node = node._get_node(int(part))
            node = node if isinstance(node, (DictConfig, ListConfig)) else None
        else:
            raise ConfigError(f"unknown config key {key!r}: {where} is a value, not a section")


def _parse_value(value: str) -> Any:
    """A command-line value parsed as omegaconf parses dot-lists (numbers, lists, null...)."""
    return OmegaConf.from_dotlist([f"v={value}"])["v"]


def compose(argv: Iterable[str] = (), extra: dict | None = None,
            config_dir: Path = CONFIG_DIR, resolve: bool = True) -> DictConfig:
    """Compose the run config from ``argv`` words. ``extra`` adds entry-point keys
    (e.g. ``checkpoint``) with their defaults before the overrides are applied."""
    argv = list(argv)
    base = _load_yaml(config_dir / "default.yaml")
    available = groups(config_dir)
    selected = dict(base.pop("defaults", {}) or {})
    overrides: list[tuple[str, str, bool]] = []
    for word in argv:
        key, value, add = _split_word(word)
        if "." not in key and key in available and not add:
            if value not in available[key]:
                hint = did_you_mean(value, available[key])
                raise ConfigError(
                    f"unknown {key} {value!r}:{hint} Choose one of "
                    f"{', '.join(available[key])} (files in {config_dir / key})")
            selected[key] = value
        else:
            overrides.append((key, value, add))
    global_parts = []
    for group, name in selected.items():
        if group not in available:
            raise ConfigError(f"default.yaml selects unknown group {group!r}")
        path = config_dir / group / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: choose one of {', '.join(available[group])}")
        part = _load_yaml(path)
        if "_global_" in part:
            global_parts.append(part.pop("_global_"))
        section = base.get(group) or OmegaConf.create({})
        base[group] = OmegaConf.merge(section, part)
    for part in global_parts:
        base = OmegaConf.merge(base, part)
    base["choices"] = dict(selected)
    return _finish(base, overrides, extra, resolve)


def compose_on(base: DictConfig | dict, argv: Iterable[str] = (), extra: dict | None = None,
               resolve: bool = True) -> DictConfig:
    """Apply dot-list overrides to a stored config (e.g. the one inside a checkpoint)."""
    base = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(base), resolve=False))
    return _finish(base, [_split_word(w) for w in argv], extra, resolve)


def _finish(base: DictConfig, overrides, extra, resolve: bool) -> DictConfig:
    if extra:
        base = OmegaConf.merge(base, OmegaConf.create(extra))
    OmegaConf.set_struct(base, True)
    for key, value, add in overrides:
        if not add:
            _check_key(base, key)
        with _open(base, add):
            OmegaConf.update(base, key, _parse_value(value), merge=False, force_add=add)
    if resolve:
        try:
            OmegaConf.resolve(base)
        except Exception as e:
            raise ConfigError(f"cannot resolve config: {e}") from None
    return base


class _open:
    """Temporarily lift struct mode for ``+key`` additions."""

    def __init__(self, cfg: DictConfig, enabled: bool):
        self.cfg, self.enabled = cfg, enabled

    def __enter__(self):
        if self.enabled:
            OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc):
        if self.enabled:
            OmegaConf.set_struct(self.cfg, True)


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def print_summary(summary: dict) -> None:
    """The last stdout line of every entry point: one JSON object."""
    sys.stdout.flush()
    print(json.dumps(summary, default=str), flush=True)


def log(msg: str) -> None:
    """Progress and reports go to stderr, so stdout stays parseable; one write per line,
    so lines from concurrent trials' threads never run together."""
    sys.stderr.write(f"{msg}\n")
    sys.stderr.flush()


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (captured in tests)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def _rank() -> int:
    """This process's global rank under DDP/SLURM launchers (0 elsewhere)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def configure_logging(level: int = logging.INFO) -> None:
    """Library modules log through ``logging.getLogger(__name__)``; entry points show those
    records on stderr as ``name: message``. Ranks other than 0 show warnings and errors
    only, so a DDP run does not print every message once per process."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.setLevel(level if _rank() == 0 else logging.WARNING)
    root.addHandler(handler)
    for name in ("datamodules", "lightning_modules", "experiments", "__main__"):
        logging.getLogger(name).setLevel(level)


def usage(fn) -> str:
    """The calling entry point's module docstring (its usage), plus the config groups."""
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    text = (getattr(module, "__doc__", None) or "").strip() or __doc__.strip()
    return (f"{text}\n\nConfig words (see experiments/config.py): group=name, a.b=value, "
            f"+a.b=value, --a.b=value.\nGroups: {json.dumps(groups())}")


def main_guard(fn, argv=None, extra: dict | None = None, composer=None) -> int:
    """Run ``fn(cfg)`` with the composed config; a ConfigError or a user-facing error
    prints one line to stderr and exits non-zero. ``composer(argv, extra)`` replaces
    :func:`compose` (entry points that start from a checkpoint's config). ``-h``/``--help``
    prints the entry point's own usage (its module docstring)."""
    from datamodules.errors import UserError  # local import: keeps config.py dependency-free

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage(fn))
        return 0
    configure_logging()
    try:
        cfg = (composer or compose)(argv, extra=extra)
        return int(fn(cfg) or 0)
    except (ConfigError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
