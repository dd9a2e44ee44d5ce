"""What ``--device auto`` and ``--dtype auto`` stand for on this machine (shared by bench and eval)."""

from __future__ import annotations

import torch

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``cuda:<LOCAL_RANK>`` under torchrun) if there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no CUDA device here; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA (as the upstream runs), float32 on the CPU."""
    if name == "auto":
        name = "float16" if device.type == "cuda" else "float32"
    if name not in DTYPES:
        raise ValueError(f"--dtype must be auto, float32, float16 or bfloat16, got {name!r}")
    return getattr(torch, name)
