"""Training speed settings that do not change what a run computes beyond rounding:
precision and memory layout, resolved for the machine at hand.

- ``trainer.precision: auto``: ``bf16-mixed`` where the device computes bfloat16 natively
  (CPUs with AVX-512 BF16 or AMX, as oneDNN reports it; CUDA devices with bf16), else
  ``32-true`` on a CPU and ``16-mixed`` on an older GPU. On a CPU without native bf16,
  autocast emulates it and is several times slower than fp32 (``benchmarks.training``).
- ``train.channels_last: auto``: the model in channels-last layout under bf16 autocast
  and on CUDA, where it is the faster layout; NCHW for fp32 on a CPU, where channels-last
  trained no faster with two threads (``benchmarks.training``). Evaluation with one
  thread was about 20 % faster in channels-last, which is why the quickstart sweep,
  one thread per trial, sets it.
"""
from __future__ import annotations

import torch

PRECISION_AUTO = "auto"
CHANNELS_LAST_CHOICES = ("auto", True, False)


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") computes bfloat16 natively."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _device_type(accelerator) -> str:
    acc = str(accelerator or "auto").lower()
    if acc in ("gpu", "cuda"):
        return "cuda"
    if acc == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def resolve_precision(precision, accelerator) -> str:
    """``trainer.precision`` with ``auto`` replaced by what this machine runs fastest."""
    if str(precision) != PRECISION_AUTO:
        return precision
    dev = _device_type(accelerator)
    if native_bf16(dev):
        return "bf16-mixed"
    return "16-mixed" if dev == "cuda" else "32-true"


def resolve_channels_last(choice, precision: str, accelerator) -> bool:
    """``train.channels_last`` (``auto``, true or false) for the resolved precision."""
    if choice not in CHANNELS_LAST_CHOICES:
        from datamodules.errors import UserError

        raise UserError(f"train.channels_last={choice!r}: expected auto, true or false")
    if choice != "auto":
        return bool(choice)
    return _device_type(accelerator) == "cuda" or str(precision).startswith("bf16")


def describe(precision: str, channels_last: bool, accelerator) -> str:
    """One log line: what was chosen, and whether the device has native bf16."""
    dev = _device_type(accelerator)
    bf16 = "native bf16" if native_bf16(dev) else "no native bf16"
    return (f"precision {precision}, {'channels-last' if channels_last else 'NCHW'} layout, "
            f"{torch.get_num_threads()} torch threads ({dev}: {bf16})")
