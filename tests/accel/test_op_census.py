import pytest
import torch
import torch.nn.functional as F

from stc_cli.accel import OpCensus


def census_of(step, *, inference=True):
    with torch.inference_mode(inference), OpCensus() as census:
        step()
    return census


def test_views_and_allocations_launch_nothing_and_each_kernel_counts_once():
    x = torch.randn(4, 3)

    def step():
        y = (x + 1).view(12).view(4, 3).t()  # one add; views only after it
        torch.empty(5)
        return torch.mm(x, y)

    census = census_of(step)
    assert census.launches == {"add.Tensor": 1, "mm.default": 1}
    assert census.total_launches == 2 and not census.host_syncs


@pytest.mark.parametrize("inference", [True, False], ids=["inference mode", "no_grad"])
def test_composite_operators_count_as_the_kernels_they_are_written_in(inference):
    """``linear`` with a bias over a matrix is one ``addmm``; ``reshape`` of a transposed matrix copies.
    In inference mode they reach the census undecomposed, and are decomposed there."""
    x, w, b = torch.randn(5, 3), torch.randn(2, 3), torch.randn(2)

    def step():
        F.linear(x, w, b)
        x.t().reshape(15)  # not viewable: one copy
        x.reshape(15)  # a view

    with torch.no_grad():
        census = census_of(step, inference=inference)
    assert census.launches == {"addmm.default": 1, "clone.default": 1, "_unsafe_view.default": 1}


@pytest.mark.parametrize(
    ("name", "step", "sync"),
    [
        ("bool of a tensor", lambda x, _i: bool(x.sum() > 0), "_local_scalar_dense.default"),
        ("item", lambda x, _i: x.max().item(), "_local_scalar_dense.default"),
        ("int of a tensor", lambda x, _i: int(x.argmax()), "_local_scalar_dense.default"),
        ("boolean mask index", lambda x, _i: x[x > 0], "index.Tensor"),
        ("nonzero", lambda x, _i: x.nonzero(), "nonzero.default"),
        ("equal", lambda x, _i: torch.equal(x, x), "equal.default"),
        ("repeat_interleave", lambda _x, i: torch.repeat_interleave(i), "repeat_interleave.Tensor"),
        ("a tensor of host data", lambda _x, _i: torch.tensor([[5]]), "lift_fresh.default"),
        (
            "setting a boolean mask's rows",
            lambda x, _i: x.__setitem__(x[:, 0] > 0, x[0] + 1),
            "index_put_.default",
        ),
    ],
)
def test_what_makes_the_host_wait_is_a_host_sync(name, step, sync):
    x, idx = torch.randn(4, 3), torch.tensor([0, 2])
    census = census_of(lambda: step(x, idx))
    assert census.host_syncs == {sync: 1}, name


def test_integer_indices_and_device_side_counters_do_not_sync():
    x, idx, length = torch.randn(4, 3), torch.tensor([0, 2]), torch.zeros((), dtype=torch.long)

    def step():
        x[idx]  # integer indices: the output's shape is known without reading them
        length.add_(3)  # a counter kept on the device
        torch.repeat_interleave(idx, output_size=2)  # its length given
        x[x > 0] = 0.0  # one value: a masked fill
        torch.tensor([])  # nothing to copy
        return torch.arange(3) + length

    census = census_of(step)
    assert not census.host_syncs
    assert census.launches == {
        "index.Tensor": 1,
        "add_.Tensor": 1,
        "repeat_interleave.Tensor": 1,
        "gt.Scalar": 1,
        "index_put_.default": 1,
        "arange.default": 1,
        "add.Tensor": 1,
    }


@pytest.mark.gpu
def test_a_copy_from_the_gpu_to_the_host_is_a_host_sync():
    x = torch.randn(4, device="cuda")
    census = census_of(lambda: (x.cpu(), x.to("cuda")))
    assert census.host_syncs == {"_to_copy.default": 1}


@pytest.mark.gpu
def test_on_cuda_the_profiler_counts_what_the_device_ran_and_the_counts_add_up():
    x = torch.randn(1000, device="cuda")
    census = OpCensus(device_ops=True)
    for entered in (1, 2):
        with census:
            x + 1  # one kernel
            x.sum().item()  # a reduction, and the copy of its result to the host
        assert census.launches == dict.fromkeys(
            ("add.Tensor", "sum.default", "_local_scalar_dense.default"), entered
        )
        assert census.device_ops == 3 * entered


def test_device_ops_are_not_counted_unless_asked():
    with OpCensus() as census:
        torch.ones(3) + 1
    assert census.device_ops is None and census.launches == {"ones.default": 1, "add.Tensor": 1}
