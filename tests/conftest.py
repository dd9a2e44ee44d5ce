import pytest
import torch

from tests.fakehub import fake_hub, hf_env  # noqa: F401  (fixtures for every test module)


@pytest.fixture
def data(tmp_path):
    """The demo's first version (``tests/demo_small.py``: 3 clips, 12 questions) installed under tmp_path:
    (its folder, its queries)."""
    from stc_cli.benchmarks import demo
    from tests.demo_small import install

    folder = install(tmp_path)
    return folder, demo.load_queries(tmp_path)


@pytest.fixture(autouse=True, scope="session")
def no_tf32():
    """GPU tests compare against float32 references: TF32 matmuls and convolutions (cuDNN's default for
    the patch embeddings) would round inputs to 10 mantissa bits."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
