"""W&B sweep files: reading them, expanding grid/random locally, trial keys and commands.

A sweep file is W&B sweep YAML (``method``, ``metric``, ``parameters``). ``command:`` may be
left out: :func:`load_sweep` fills in :data:`DEFAULT_COMMAND`, so the local backend and the
spec registered with W&B run the same command. A file that gives its own ``command:`` keeps it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import shlex
from pathlib import Path
from typing import Sequence

import yaml

from datamodules.errors import UserError
from experiments.config import CONFIG_DIR, _split_word

SWEEP_DIR = CONFIG_DIR / "sweeps"
# Every trial trains one model: ``python -m experiments.train key=value ...``.
DEFAULT_COMMAND = ("${env}", "${interpreter}", "-m", "experiments.train", "${args_no_hyphens}")
# What a W&B agent runs for a sweep registered without a command.
WANDB_DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


def available() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def sweep_file(name: str) -> Path:
    """``name`` of a file in ``configs/sweeps`` or a path to a ``.yaml``/``.yml`` file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else SWEEP_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown sweep {name!r}: choose one of {', '.join(available())} "
                        f"(files in {SWEEP_DIR}) or give a path to a sweep YAML")
    return path


def load_sweep(name: str) -> dict:
    """The sweep spec, with ``name`` (default: the file stem) and ``command`` filled in."""
    path = sweep_file(name)
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a W&B sweep file is a mapping with method, metric and "
                        "parameters")
    for key in ("method", "metric", "parameters"):
        if key not in spec:
            raise UserError(f"{path}: a W&B sweep file needs '{key}'")
    key = spec.get("contrast")
    if key is not None and len((spec["parameters"].get(key) or {}).get("values") or []) < 2:
        raise UserError(f"{path}: contrast: {key} needs a parameter {key!r} with two or more "
                        f"'values' (its last minus its first is reported)")
    spec.setdefault("name", path.stem)
    spec.setdefault("command", list(DEFAULT_COMMAND))
    return spec


def registered_spec(spec: dict, overrides: list[str] = ()) -> dict:
    """The complete spec for ``wandb.sweep``: the file's keys but ``description``, ``local``
    (options of the local backend) and ``contrast`` (a section of the local report), and the
    command with ``overrides`` appended (an agent passes them on to every trial)."""
    body = {k: v for k, v in spec.items() if k not in ("description", "local", "contrast")}
    body["command"] = [*spec.get("command", DEFAULT_COMMAND), *overrides]
    return body


def _sample(p: dict, rng: random.Random):
    if "value" in p:
        return p["value"]
    if "values" in p:
        return rng.choice(list(p["values"]))
    dist = p.get("distribution", "uniform" if isinstance(p.get("min"), float) else "int_uniform")
    lo, hi = p["min"], p["max"]
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist in ("uniform", "q_uniform"):
        v = rng.uniform(lo, hi)
    elif dist in ("log_uniform_values", "q_log_uniform_values"):
        v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    elif dist == "log_uniform":  # W&B: min/max are natural-log exponents
        v = math.exp(rng.uniform(lo, hi))
    elif dist == "categorical":
        return rng.choice(list(p["values"]))
    else:
        raise UserError(f"distribution {dist!r} is not supported by backend=local")
    if "q" in p:
        v = round(v / p["q"]) * p["q"]
    return v


def expand(spec: dict, count: int | None = None, seed: int = 0) -> list[dict]:
    """Parameter dicts for each trial, in a stable order."""
    method = spec["method"]
    params = spec["parameters"]
    if method == "grid":
        keys = list(params)
        choices = []
        for k in keys:
            p = params[k]
            if "value" in p:
                choices.append([p["value"]])
            elif "values" in p:
                choices.append(list(p["values"]))
            else:
                raise UserError(f"grid sweep {spec['name']!r}: parameter {k!r} needs value or "
                                "values (distributions need method: random)")
        trials = [dict(zip(keys, combo)) for combo in itertools.product(*choices)]
        return trials[:count] if count else trials
    if method == "random":
        n = count or spec.get("run_cap")
        if not n:
            raise UserError(f"random sweep {spec['name']!r} needs count=N (or run_cap in the file)")
        rng = random.Random(seed)
        return [{k: _sample(p, rng) for k, p in params.items()} for _ in range(int(n))]
    if method == "bayes":
        raise UserError(f"sweep {spec['name']!r} uses method: bayes, which needs the W&B "
                        "server: run it with backend=wandb (or change the method to grid or "
                        "random for backend=local)")
    raise UserError(f"unknown sweep method {method!r}: use grid, random or bayes")


def plan(spec: dict, count: int | None = None, seed: int = 0, overrides: list[str] = ()
         ) -> tuple[list[dict], list[dict]]:
    """The trials a sweep runs: :func:`expand`, repeats of one effective config collapsed
    (:func:`distinct_trials`), then the first ``count`` (grid). Returns ``(trials,
    collapsed)``."""
    expanded = expand(spec, count=count if spec["method"] != "grid" else None, seed=seed)
    trials, collapsed = distinct_trials(expanded, list(overrides))
    if count and spec["method"] == "grid":
        trials = trials[:int(count)]
        collapsed = [c for c in collapsed if c["same_as"] in trials]
    return trials, collapsed


def args_no_hyphens(params: dict) -> list[str]:
    """What W&B's ``${args_no_hyphens}`` expands to: ``key=value`` per parameter."""
    out = []
    for k, v in params.items():
        if isinstance(v, (list, dict)):
            v = json.dumps(v)
        elif isinstance(v, bool):
            v = str(v)
        elif v is None:  # YAML's null, which the config parses back to None
            v = "null"
        out.append(f"{k}={v}")
    return out


def trial_command(spec: dict, params: dict, interpreter: str,
                  overrides: list[str] = ()) -> list[str]:
    """The command line a W&B agent runs for ``params`` (macros expanded), then
    ``overrides``: the same words :func:`registered_spec` appends for W&B."""
    cmd = []
    for word in spec.get("command", DEFAULT_COMMAND):
        if word == "${env}":
            continue
        if word == "${interpreter}":
            cmd.append(interpreter)
        elif word == "${program}":
            cmd.append(spec.get("program", ""))
        elif word == "${args_no_hyphens}":
            cmd.extend(args_no_hyphens(params))
        elif word == "${args}":
            cmd.extend("--" + a for a in args_no_hyphens(params))
        elif word == "${args_json}":
            cmd.append(json.dumps(params))
        else:
            cmd.append(word)
    return cmd + list(overrides)


def trial_key(params: dict, overrides: list[str] = ()) -> str:
    """A trial's identity in the trial log: its parameters, and the extra words given to the
    sweep when there are any (the same parameters with other overrides are another trial)."""
    what = {"params": params, "overrides": list(overrides)} if overrides else params
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


# Parameters that index a repetition of the same setting (the protocol unit): results are
# averaged over them, and paired comparisons match repetitions on them.
REPETITION_KEYS = ("seed", "data.fold")


def effective_params(params: dict, overrides: Sequence[str] = ()) -> dict:
    """``params`` with the value a command-line override gives a parameter it sets (it comes
    last on the trial's command, so it wins): ``data=gtzan`` over the sweep's ``data: synth``
    reads ``{"data": "gtzan"}``; values parsed as YAML scalars, as the config parses them."""
    out = dict(params)
    for word in overrides:
        key, sep, value = word.lstrip("-+").partition("=")
        if sep and key in out:
            out[key] = yaml.safe_load(value) if value else value
    return out


def setting_of(params: dict) -> dict:
    """All parameters but the repetition keys: trials with the same setting are averaged."""
    return {k: v for k, v in params.items() if k not in REPETITION_KEYS}


def repetition_of(params: dict) -> dict:
    """The repetition keys of a trial (``{"seed": 1, "data.fold": 3}``); absent ones are
    left out."""
    return {k: params[k] for k in REPETITION_KEYS if k in params}


def _word_value(params: dict, overrides: list[str], keys: tuple[str, ...]):
    """The value a trial's command gives the first of ``keys`` set: the overrides come last
    on the command line, so they win over the parameters."""
    found = None
    for k in keys:
        if k in params:
            found = params[k]
            break
    for word in overrides:
        k, v, _ = _split_word(word)
        if k in keys:
            found = yaml.safe_load(v) if v else None
    return found


def ignored_params(params: dict, overrides: list[str] = ()) -> list[str]:
    """The parameters of a trial that do not change what it computes (the same rule as the
    run identity, :func:`experiments.run_dirs.ignored_keys`): ``model.tap`` and
    ``model.join`` for a mode without a middle-level join."""
    from experiments.run_dirs import ignored_keys, mode_of_choice

    mode = _word_value(params, overrides, ("model.mode",))
    if mode is None:
        mode = mode_of_choice(_word_value(params, overrides, ("model",)))
    match = _word_value(params, overrides, ("backbone.match_params",))
    return [k for k in ignored_keys(str(mode), match) if k in params]


def distinct_trials(trials: list[dict], overrides: list[str] = ()
                    ) -> tuple[list[dict], list[dict]]:
    """(trials without the parameters they ignore, first occurrence of each kept; the
    repeats left out, each ``{"params", "same_as", "ignored"}``)."""
    kept: dict[str, dict] = {}
    collapsed = []
    for params in trials:
        ignored = ignored_params(params, overrides)
        eff = {k: v for k, v in params.items() if k not in ignored}
        key = json.dumps(eff, sort_keys=True, default=str)
        if key in kept:
            collapsed.append({"params": params, "same_as": kept[key], "ignored": ignored})
        else:
            kept[key] = eff
    return list(kept.values()), collapsed


def describe(params: dict, overrides: Sequence[str] = ()) -> str:
    """``params`` as ``key=value`` words; a parameter that a command-line override sets
    (``data=gtzan`` over the sweep's ``data: synth``) shows the value the trial runs with."""
    replaced = {o.split("=", 1)[0]: o for o in overrides if "=" in o}
    words = [replaced.get(a.split("=", 1)[0], a) for a in args_no_hyphens(params)]
    return " ".join(shlex.quote(a) for a in words)
