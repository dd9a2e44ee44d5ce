"""Count, on any device, the operators a step runs: the ones that launch device work, and the ones that
make the host wait for the device.

On a GPU a step of small kernels waits for launches, and one host sync inside a step stops it from being
recorded in a CUDA graph at all (``graphs.py``). Both show up as ATen operators on a CPU too: every
operator that is not a view or an allocation launches at least one kernel on CUDA, and a sync is an
operator whose output the host must read (``item``, ``bool(t)``, ``int(t)``), whose shape depends on the
data (``nonzero``, a boolean mask index), a copy from the device to the host, or ``torch.tensor(data)``
(on a GPU, a blocking copy from the host that waits for the device; on a CPU every such tensor counts,
as if it went to the device, but for a single number). So a CPU run can count
what a GPU run would launch and check that a step meant for a graph never syncs. The counts are a proxy:
one operator may launch several kernels (``topk``), and fused kernels (SDPA) count once.

Not seen: ``Tensor.tolist()`` and ``.numpy()`` of a CPU tensor, which read memory without an operator.
Seen too much: on a CPU every tensor counts as if on the device, also one a GPU run keeps on the host
(transformers reads ``grid_thw`` there).
On CUDA, ``OpCensus(device_ops=True)`` also counts what the device really ran (kernels, copies and fills,
from ``torch.profiler``), to check the proxy against.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# allocations, and the host-side 0-dim tensor a Python number becomes: no device work
_NO_DEVICE_WORK = {
    "empty.memory_format",
    "empty_strided.default",
    "new_empty.default",
    "new_empty_strided.default",
    "scalar_tensor.default",
    "detach_.default",  # autograd bookkeeping (torch.tensor(data) makes one)
}
_ALWAYS_SYNC = {"equal.default", "is_nonzero.default"}  # answer a host-side bool


class OpCensus(TorchDispatchMode):
    """Within ``with OpCensus() as census:``, every ATen operator run is counted.

    ``launches``: operators that do device work, by name (views and allocations left out).
    ``host_syncs``: operators that make the host wait for the device, by name.
    ``device_ops``: with ``device_ops=True`` (CUDA only), the kernels, copies and fills the device ran,
    as the profiler saw them; None otherwise. A census may be entered several times: counts add up.

    Example:
        >>> with OpCensus() as census:
        ...     tower(pixels)
        >>> census.total_launches, dict(census.host_syncs)
    """

    def __init__(self, *, device_ops: bool = False) -> None:
        super().__init__()
        self.launches: Counter[str] = Counter()
        self.host_syncs: Counter[str] = Counter()
        self.device_ops: int | None = 0 if device_ops else None
        self._profiler = None
        self._depth = 0  # the mode is entered again for each decomposed operator

    @property
    def total_launches(self) -> int:
        return sum(self.launches.values())

    def __enter__(self):
        if self._depth == 0 and self.device_ops is not None:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CUDA])
            self._profiler.__enter__()
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        self._depth -= 1
        if self._depth == 0 and self._profiler is not None:
            torch.cuda.synchronize()  # every kernel done, and so recorded
            self._profiler.__exit__(*exc)
            cuda = torch.autograd.DeviceType.CUDA
            self.device_ops += sum(1 for event in self._profiler.events() if event.device_type == cuda)
            self._profiler = None
        return result

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # An operator written in others (``linear``: ``addmm``, ``reshape``: a copy where it must) is
        # counted as those: in inference mode it arrives here undecomposed.
        with self:  # the operators it is written in come back through this mode
            decomposed = func.decompose(*args, **kwargs)
        if decomposed is not NotImplemented:
            return decomposed
        name = f"{func._schema.name.removeprefix('aten::')}.{func._overloadname}"
        if not func.is_view and name not in _NO_DEVICE_WORK:
            self.launches[name] += 1
        if _syncs(func, name, args, kwargs):
            self.host_syncs[name] += 1
        return func(*args, **kwargs)


def _syncs(func, name: str, args: tuple, kwargs: dict) -> bool:
    if name == "lift_fresh.default":  # torch.tensor(data); not an empty one, nor t[mask] = 0.0's number
        made = args[0]
        return made.numel() > 0 and (made.dim() > 0 or made.device.type != "cpu")
    if torch.Tag.data_dependent_output in func.tags or name in _ALWAYS_SYNC:
        return True
    if name == "index.Tensor":  # integer indices have a known shape; a boolean mask's depends on the data
        return any(i is not None and i.dtype == torch.bool for i in args[1])
    if name in ("index_put.default", "index_put_.default"):  # t[mask] = values
        # a boolean mask becomes indices (nonzero), except for one value, filled as masked_fill_ does
        value = args[2]
        masked = any(i is not None and i.dtype == torch.bool for i in args[1])
        return masked and (value.numel() != 1 or value.device.type != "cpu")
    if name == "repeat_interleave.Tensor":  # its length is read from the repeats unless given
        return kwargs.get("output_size") is None
    if torch.Tag.dynamic_output_shape in func.tags:
        return True
    if name == "_to_copy.default":  # device to host
        source, target = args[0].device, kwargs.get("device")
        return target is not None and torch.device(target).type == "cpu" and source.type != "cpu"
    return False
