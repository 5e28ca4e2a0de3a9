"""Check that ``setup.cfg`` and the lock file agree; print parts of the lock for ``make setup``.

    python -m experiments.check_lock [LOCK]                  # exit 1 and name each disagreement
    python -m experiments.check_lock --without-torch LOCK    # the lock minus the PyTorch stack
    python -m experiments.check_lock --torch-pins LOCK       # "torch==X torchaudio==Y"

``setup.cfg`` holds the ranges a library user needs; the lock (``make lock``, uv's
requirements format with hashes) holds the exact set that ``make setup`` installs. They
agree when every requirement of ``install_requires`` and of every extra is pinned in the
lock at a version inside its range, and every package the lock pins *for the project*
(annotated ``via mlfi-genre (setup.cfg)``) is still required by ``setup.cfg``.

Standard library only (plus ``packaging``, taken from pip where it is not installed), so it
runs before anything is installed.
"""
from __future__ import annotations

import argparse
import configparser
import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = "mlfi-genre"
# The PyTorch build and what it brings: replaced as one piece by another wheel index.
TORCH_PINNED = ("torch", "torchaudio")
TORCH_STACK = re.compile(r"^(torch|torchaudio|triton|nvidia-.*|cuda-toolkit|cuda-bindings|"
                         r"cuda-pathfinder)$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    name: str
    version: str
    direct: bool  # the lock says the project itself requires it
    text: str  # the whole block: pin line, hashes, annotations
    via: list[str]  # the packages that require it, as the lock annotates them


def read_lock(path: Path) -> dict[str, Pin]:
    """Package name -> its pin, from a uv/pip-tools requirements lock."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = Pin(canonical(m.group(1)), m.group(2), False, line + "\n", [])
            pins[current.name] = current
            continue
        if current is None:
            continue
        current.text += line + "\n"
        via = re.match(r"^\s*#\s+(?:via\s+)?(\S.*)$", line)
        if via and via.group(1) != "via":
            if f"{PROJECT} (setup.cfg)" in via.group(1):
                current.direct = True
            else:
                current.via.append(via.group(1).strip())
    return pins


def read_requirements(setup_cfg: Path) -> dict[str, tuple[Requirement, str]]:
    """Requirement name -> (requirement, where in setup.cfg) for install_requires and extras."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    groups = {"install_requires": cfg.get("options", "install_requires", fallback="")}
    if cfg.has_section("options.extras_require"):
        for extra, text in cfg.items("options.extras_require"):
            groups[f"extras_require {extra}"] = text
    reqs: dict[str, tuple[Requirement, str]] = {}
    for where, text in groups.items():
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                req = Requirement(line)
                reqs[canonical(req.name)] = (req, where)
    return reqs


def problems(setup_cfg: Path, lock: Path) -> list[str]:
    """Every disagreement between setup.cfg and the lock, one sentence each."""
    if not Path(lock).is_file():
        return [f"{lock} does not exist: run `make lock` and commit it"]
    reqs, pins = read_requirements(setup_cfg), read_lock(lock)
    out = []
    for name, (req, where) in sorted(reqs.items()):
        pin = pins.get(name)
        if pin is None:
            out.append(f"setup.cfg requires {req} ({where}) but {Path(lock).name} does not pin "
                       f"{name}: run `make lock` and commit {Path(lock).name}")
        elif not req.specifier.contains(Version(pin.version), prereleases=True):
            out.append(f"setup.cfg requires {req} ({where}) but {Path(lock).name} pins "
                       f"{name}=={pin.version}: run `make lock` and commit {Path(lock).name}")
        elif not pin.direct:
            out.append(f"setup.cfg requires {req} ({where}) but {Path(lock).name} was not "
                       f"compiled with it ({name}=={pin.version} is pinned only as a dependency "
                       f"of {', '.join(pin.via) or 'other packages'}): run `make lock` and "
                       f"commit {Path(lock).name}")
    for name, pin in sorted(pins.items()):
        if pin.direct and name not in reqs:
            out.append(f"{Path(lock).name} pins {name}=={pin.version} for {PROJECT} but setup.cfg "
                       f"no longer requires it: run `make lock` and commit {Path(lock).name}")
    return out


def without_torch(lock: Path) -> str:
    """The lock's blocks minus the PyTorch stack (torch, torchaudio, triton, CUDA wheels)."""
    return "".join(p.text for p in read_lock(lock).values() if not TORCH_STACK.match(p.name))


def torch_pins(lock: Path) -> str:
    pins = read_lock(lock)
    return " ".join(f"{n}=={pins[n].version}" for n in TORCH_PINNED)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.check_lock",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("lock", nargs="?", default=str(REPO / "requirements.lock"))
    ap.add_argument("--setup-cfg", default=str(REPO / "setup.cfg"))
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--without-torch", action="store_true",
                      help="print the lock without the PyTorch stack")
    what.add_argument("--torch-pins", action="store_true",
                      help="print the locked torch and torchaudio pins")
    args = ap.parse_args(argv)
    if args.without_torch:
        sys.stdout.write(without_torch(Path(args.lock)))
        return 0
    if args.torch_pins:
        print(torch_pins(Path(args.lock)))
        return 0
    found = problems(Path(args.setup_cfg), Path(args.lock))
    for p in found:
        print(f"check_lock: {p}", file=sys.stderr)
    if not found:
        n = len(read_lock(Path(args.lock)))
        print(f"check_lock: setup.cfg and {Path(args.lock).name} agree ({n} pinned packages)",
              file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
