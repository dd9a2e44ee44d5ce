"""Count, on any device, the operators a step runs: the ones that launch device work, and the ones that
make the host wait for the device.

On a GPU a step of small kernels waits for launches, and one host sync inside a step stops it from being
recorded in a CUDA graph at all (``graphs.py``). Both show up as ATen operators on a CPU too: every
operator that is not a view or an allocation launches at least one kernel on CUDA, and a sync is an
operator whose output the host must read (``item``, ``bool(t)``, ``int(t)``), whose shape depends on the
data (``nonzero``, a boolean mask index), or a copy from the device to the host. So a CPU run can count
what a GPU run would launch and check that a step meant for a graph never syncs. The counts are a proxy:
one operator may launch several kernels (``topk``), and fused kernels (SDPA) count once.

Not seen: ``Tensor.tolist()`` and ``.numpy()`` of a CPU tensor, which read memory without an operator.
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
}
_ALWAYS_SYNC = {"equal.default", "is_nonzero.default"}  # answer a host-side bool


class OpCensus(TorchDispatchMode):
    """Within ``with OpCensus() as census:``, every ATen operator run is counted.

    ``launches``: operators that do device work, by name (views and allocations left out).
    ``host_syncs``: operators that make the host wait for the device, by name.

    Example:
        >>> with OpCensus() as census:
        ...     tower(pixels)
        >>> census.total_launches, dict(census.host_syncs)
    """

    def __init__(self) -> None:
        super().__init__()
        self.launches: Counter[str] = Counter()
        self.host_syncs: Counter[str] = Counter()

    @property
    def total_launches(self) -> int:
        return sum(self.launches.values())

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
    if torch.Tag.data_dependent_output in func.tags or name in _ALWAYS_SYNC:
        return True
    if name == "index.Tensor":  # integer indices have a known shape; a boolean mask's depends on the data
        return any(i is not None and i.dtype == torch.bool for i in args[1])
    if torch.Tag.dynamic_output_shape in func.tags:
        return True
    if name == "_to_copy.default":  # device to host
        source, target = args[0].device, kwargs.get("device")
        return target is not None and torch.device(target).type == "cpu" and source.type != "cpu"
    return False
