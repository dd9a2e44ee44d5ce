import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The live tests run tiny models frame by frame: one intra-op thread keeps them fast and steady on a
    shared 2-core machine (two spinning OpenMP threads next to other work slow each call ten-fold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
