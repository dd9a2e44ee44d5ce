import pytest
import torch

from tests.fakehub import fake_hub, hf_env  # noqa: F401  (fixtures for every test module)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
