"""``--device`` and ``--dtype``: one GPU per torchrun process, and each model's own CUDA dtype."""

import pytest
import torch

from stc_cli.devices import resolve_device, resolve_dtype
from stc_cli.models import CUDA_DTYPES


@pytest.mark.parametrize(
    ("name", "local_rank", "world", "gpus", "want"),
    [
        ("auto", 0, 1, 0, "cpu"),
        ("auto", 0, 1, 2, "cuda:0"),
        ("auto", 1, 2, 2, "cuda:1"),  # torchrun: the GPU of this process's LOCAL_RANK
        ("cuda", 1, 2, 2, "cuda:1"),  # not every rank on cuda:0
        ("cuda:1", 0, 1, 2, "cuda:1"),  # one process may pick its GPU
        ("cpu", 3, 4, 2, "cpu"),
    ],
)
def test_each_process_gets_its_own_device(name, local_rank, world, gpus, want):
    assert resolve_device(name, local_rank, world, gpus) == torch.device(want)


@pytest.mark.parametrize(
    ("name", "local_rank", "world", "gpus", "message"),
    [
        (
            "cuda:0",
            1,
            2,
            2,
            "--device cuda:0 under torchrun would put all 2 processes on one GPU; use --device cuda",
        ),
        ("cuda", 2, 3, 2, "LOCAL_RANK is 2 but torch sees 2 GPU(s): start at most 2 process(es) per machine"),
        ("cuda:3", 0, 1, 2, "--device cuda:3 asks for GPU 3 but torch sees 2 GPU(s)"),
        ("cuda", 0, 1, 0, "--device cuda: torch sees no CUDA device here; use --device cpu"),
        ("tpu9", 0, 1, 0, "--device must be auto, cpu, cuda or cuda:N, got 'tpu9'"),
    ],
)
def test_devices_that_cannot_work_are_refused(name, local_rank, world, gpus, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_device(name, local_rank, world, gpus)


def test_auto_dtype_is_each_model_s_own_on_cuda_and_float32_on_the_cpu():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_dtype("auto", cuda, CUDA_DTYPES["livecc"]) == torch.bfloat16  # LiveCC runs in bfloat16
    assert resolve_dtype("auto", cuda, CUDA_DTYPES["rekv"]) == torch.float16
    assert resolve_dtype("auto", cpu, CUDA_DTYPES["livecc"]) == torch.float32
    assert resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ValueError, match="--dtype must be auto, float32, float16 or bfloat16, got 'int8'"):
        resolve_dtype("int8", cpu)
