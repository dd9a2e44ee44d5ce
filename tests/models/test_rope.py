"""RoPE's table for ReKV's memory: the rotation of computing cos and sin per call."""

import gc
import weakref

import pytest
import torch

from stc_cli.models.rope import RopeTable
from tests.models.test_rekv_memory import rotate

THETA = 1e6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [8, 128])
def test_rows_gathered_from_the_table_rotate_as_cos_and_sin_computed_per_call(dtype, dim):
    """Within the rounding of the dtype: the CPU's float32 cos of large angles varies by up to 6e-4 from one
    process to the next on the dev machine (a row off by one position would be off by O(1))."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 300, dim, generator=generator).to(dtype)
    positions = torch.randint(0, 64, (300,), generator=generator)
    rope = RopeTable(THETA)
    for bound in (64, 1000):  # and again from a table grown past what was asked first
        torch.testing.assert_close(rope.rotate(x, positions, bound), rotate(x, positions, THETA))


def test_positions_outside_the_bound_take_the_nearest_inside():
    x = torch.randn(2, 3, 8)
    rope = RopeTable(THETA)
    got = rope.rotate(x, torch.tensor([-5, 3, 9]), bound=4)
    torch.testing.assert_close(got, rotate(x, torch.tensor([0, 3, 3]), THETA))


def test_an_outgrown_table_stays_alive_for_the_cuda_graphs_recorded_on_it():
    rope = RopeTable(THETA)
    x = torch.randn(1, 2, 8)
    rope.rotate(x, torch.tensor([0, 1]), bound=4)
    first = weakref.ref(rope._rows(8, x.device, 4)[0])
    rope.rotate(x, torch.tensor([0, 1]), bound=10)  # grows: rows 0..9 at least
    gc.collect()
    assert first() is not None and first().shape[0] == 4
    assert rope._rows(8, x.device, 10)[0].shape[0] == 10
