"""What ``--device auto`` and ``--dtype auto`` stand for on this machine (shared by bench and eval)."""

from __future__ import annotations

import torch

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(name: str, local_rank: int = 0, world: int = 1, gpus: int | None = None) -> torch.device:
    """``auto``: this process's GPU if there is one, else the CPU. Under torchrun (``world`` > 1) ``auto``
    and ``cuda`` mean ``cuda:<LOCAL_RANK>``, one GPU per process; a fixed ``cuda:N`` is refused, since it
    would put every rank on one GPU. ``gpus``: the CUDA devices torch sees (None: ask torch)."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if name == "auto":
        name = "cuda" if gpus else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type != "cuda":
        return device
    if not gpus:
        raise ValueError(f"--device {name}: torch sees no CUDA device here; use --device cpu")
    if device.index is not None and world > 1:
        raise ValueError(
            f"--device {name} under torchrun would put all {world} processes on one GPU; "
            "use --device cuda (each process takes the GPU of its LOCAL_RANK)"
        )
    index = local_rank if device.index is None else device.index
    if index >= gpus:
        where = (
            f"LOCAL_RANK is {local_rank}" if device.index is None else f"--device {name} asks for GPU {index}"
        )
        raise ValueError(
            f"{where} but torch sees {gpus} GPU(s): start at most {gpus} process(es) per machine "
            "(torchrun --nproc-per-node) or pick a GPU that exists"
        )
    return torch.device("cuda", index)


def resolve_dtype(name: str, device: torch.device, cuda_default: str = "float16") -> torch.dtype:
    """``auto`` is ``cuda_default`` on CUDA (the model's own: float16 for ReKV, bfloat16 for LiveCC, as
    their upstreams run them), float32 on the CPU."""
    if name == "auto":
        name = cuda_default if device.type == "cuda" else "float32"
    if name not in DTYPES:
        raise ValueError(f"--dtype must be auto, float32, float16 or bfloat16, got {name!r}")
    return getattr(torch, name)


def cpu_name() -> str:
    """The CPU's marketing name (``platform.processor()`` is empty or just the architecture on Linux)."""
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"
