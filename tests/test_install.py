"""The install is the lock: installed versions, setup.cfg/lock agreement, load failures."""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

from experiments import check_install
from experiments.check_lock import TORCH_STACK, problems, read_lock, torch_pins, without_torch
from tests.conftest import REPO, run_cli

LOCK = REPO / "requirements.lock"
SETUP_CFG = REPO / "setup.cfg"


def test_every_locked_package_is_installed_at_its_locked_version():
    pins = read_lock(LOCK)
    # `make setup TORCH_INDEX=...` takes the PyTorch stack from another index on purpose.
    torch_variant = (Path(sys.prefix, "torch-index").is_file()
                     or Version(metadata.version("torch")).local is not None)
    wrong = []
    for name, pin in pins.items():
        if torch_variant and TORCH_STACK.match(name) and name not in ("torch", "torchaudio"):
            continue  # another PyTorch build brings its own CUDA wheels
        try:
            installed = Version(metadata.version(name)).public
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pin.version:
            wrong.append(f"{name}: lock {pin.version}, installed {installed}")
    assert not wrong, "the venv is not the lock (run `make setup`):\n" + "\n".join(wrong)


def test_the_compiled_parts_load():
    assert check_install.problem() is None
    assert re.match(r"install ok: torch 2\.14\.1\S* \(CUDA build .*torchaudio 2\.11\.1",
                    check_install.summary())


def test_setup_cfg_and_the_committed_lock_agree():
    assert problems(SETUP_CFG, LOCK) == []
    assert torch_pins(LOCK) == "torch==2.14.1 torchaudio==2.11.1"


def _edited_setup_cfg(tmp_path: Path, old: str, new: str) -> Path:
    text = SETUP_CFG.read_text()
    assert old in text
    out = tmp_path / "setup.cfg"
    out.write_text(text.replace(old, new, 1))
    return out


def test_a_package_added_to_setup_cfg_only_fails_the_check_naming_it(tmp_path):
    cfg = _edited_setup_cfg(tmp_path, "    pyyaml>=6.0\n", "    pyyaml>=6.0\n    scipy-bio>=1.2\n")
    res = run_cli("experiments.check_lock", str(LOCK), "--setup-cfg", str(cfg))
    assert res.returncode == 1
    assert ("setup.cfg requires scipy-bio>=1.2 (install_requires) but requirements.lock does "
            "not pin scipy-bio: run `make lock`") in res.stderr


def test_a_package_the_lock_has_only_as_a_dependency_is_not_enough(tmp_path):
    # numba is in the lock (librosa needs it) but the lock was not compiled with it.
    cfg = _edited_setup_cfg(tmp_path, "    pyyaml>=6.0\n", "    pyyaml>=6.0\n    numba>=0.59\n")
    assert problems(cfg, LOCK) == [
        "setup.cfg requires numba>=0.59 (install_requires) but requirements.lock was not "
        "compiled with it (numba==0.68.1 is pinned only as a dependency of librosa): run "
        "`make lock` and commit requirements.lock"]


def test_a_range_the_lock_falls_outside_of_is_named_with_the_locked_pin(tmp_path):
    cfg = _edited_setup_cfg(tmp_path, "torch>=2.14,<2.15", "torch>=2.15")
    assert problems(cfg, LOCK) == [
        "setup.cfg requires torch>=2.15 (install_requires) but requirements.lock pins "
        "torch==2.14.1: run `make lock` and commit requirements.lock"]


def test_a_dependency_dropped_from_setup_cfg_but_kept_in_the_lock_is_named(tmp_path):
    cfg = _edited_setup_cfg(tmp_path, "    captum==0.9.*\n", "")
    assert problems(cfg, LOCK) == [
        "requirements.lock pins captum==0.9.0 for mlfi-genre but setup.cfg no longer requires "
        "it: run `make lock` and commit requirements.lock"]


def test_a_dev_extra_is_checked_too(tmp_path):
    cfg = _edited_setup_cfg(tmp_path, "    pytest>=8\n", "    pytest>=8\n    hypothesis>=6\n")
    (msg,) = problems(cfg, LOCK)
    assert msg.startswith("setup.cfg requires hypothesis>=6 (extras_require dev)")


def test_the_lock_without_torch_keeps_everything_else_with_hashes():
    rest = without_torch(LOCK)
    names = re.findall(r"^([a-z0-9][a-z0-9._-]*)==", rest, flags=re.M)
    assert not [n for n in names if TORCH_STACK.match(n)]
    assert "torch" not in names and "torchaudio" not in names and "triton" not in names
    assert len(names) == len([n for n in read_lock(LOCK) if not TORCH_STACK.match(n)])
    assert re.search(r"^numpy==\S+ \\\n    --hash=sha256:[0-9a-f]{64}", rest, flags=re.M)


def test_a_torchaudio_that_does_not_load_gives_one_line_with_both_versions(tmp_path):
    # The failure a fresh machine hit: torchaudio built for another torch.
    fake = tmp_path / "shadow" / "torchaudio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise OSError('Could not load this library: /venv/torchaudio/lib/libtorchaudio.so')\n")
    res = run_cli("experiments.check_install", env={"PYTHONPATH": str(fake.parent)})
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(
        f"check_install: torchaudio does not load: torch {metadata.version('torch')} with "
        f"torchaudio {metadata.version('torchaudio')} (OSError: Could not load this library")
    assert lines[0].endswith("rm -rf .venv && make setup")


@pytest.mark.parametrize("target", ["setup", "lock", "check-lock"])
def test_make_targets_install_from_the_lock(target):
    # `make -n` prints the commands without running them.
    import subprocess

    out = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    if target == "setup":
        assert "pip install --quiet --require-hashes --no-deps -r requirements.lock" in out
        assert "experiments.check_install" in out
    elif target == "lock":
        assert "uv pip compile setup.cfg --extra dev" in out and "-o requirements.lock" in out
    assert "experiments.check_lock" in out or target == "setup"
