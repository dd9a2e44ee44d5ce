"""What ``STCCacher`` needs from one family of encoder layers, and the selective-layer steps they share.

The cacher itself (``cacher.py``) owns what is the same for every ViT: the chunk counter, the per-layer
references, when a layer runs stock, and which tokens are recomputed. A ``LayerFamily`` says the rest:
where the layers are, which module outputs hold K, V and the two branch deltas, how one layer call is
seen as frames ``[F, T, C]``, and how a layer recomputes only some rows. Families: pre-LN ViTs with
separate q/k/v projections (SigLIP, CLIP; ``cacher.py``), Qwen2-VL vision blocks (``qwen2vl_cacher.py``), and
on top of those, Qwen2.5-VL's windowed ones (``qwen25vl_cacher.py``: frames and attention segments) and
Qwen3-VL's (``qwen3vl_cacher.py``: where to find them). A new family is one module with one class that
implements ``LayerFamily``, or subclasses the nearest family and overrides what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

import torch
from torch import nn

# Selects tokens: keys [F, T, C] -> indices [F, n] of the rows to recompute, per frame.
Select = Callable[[torch.Tensor], torch.Tensor]
# Reads a captured module output: (output, the call's ``last`` index) -> {reference field: tensor}.
Capture = Callable[[object, int | slice], dict]
# Whether a layer call's positions equal a reference's: (the call's [F, T, P], the reference's [T, P]).
SamePositions = Callable[[torch.Tensor, torch.Tensor], bool]


@dataclass
class LayerCall:
    """One call of an encoder layer, as the cacher sees it.

    ``frames``: the input hidden states as ``[F, T, C]`` (a view), None when the frames differ in length.
    ``last``: the dim-0 index of the last frame's rows in the layer's own tensors (-1 for a batch of
    frames, a slice for a packed sequence), where its references are read.
    ``positions``: per-token position codes in the layer's own layout (``[..., P]``, F * T rows) that a
    reference is only valid for, e.g. rotary cos|sin; None where positions are fixed.
    ``context``: family-specific inputs that ``LayerFamily.selective`` needs (mask, rotary tables).
    """

    frames: torch.Tensor | None
    last: int | slice
    positions: torch.Tensor | None = None
    context: object = None


@dataclass
class LayerReference:
    """One layer's tensors from the last frame of the latest reference chunk, each ``[T, C]``
    (``positions``: ``[T, P]`` or None)."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    attn_out: torch.Tensor | None = None
    mlp_out: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    def usable_for(self, call: LayerCall, same: SamePositions = lambda a, b: bool((a == b).all())) -> bool:
        """Whether a selective pass over ``call`` can reuse this reference: the same token count,
        dtype and device, and, where the layer has positions, the same ones (the same grid), as ``same``
        says (on a GPU reading its answer waits for the device)."""
        ref, frames = self.mlp_out, call.frames
        if ref is None or frames is None or ref.shape != frames.shape[1:]:
            return False
        if ref.dtype != frames.dtype or ref.device != frames.device:
            return False
        if (self.positions is None) != (call.positions is None):
            return False
        if self.positions is None:
            return True
        positions = call.positions.reshape(*frames.shape[:2], -1)
        return positions.shape[-1] == self.positions.shape[-1] and same(positions, self.positions)

    def clear(self) -> None:
        for field in fields(self):
            setattr(self, field.name, None)

    def storages(self) -> dict[int, int]:
        """``{address: bytes}`` of the storages kept alive: references are views of whole chunk outputs,
        and several may share one (Qwen2-VL's K and V are both views of the fused qkv output)."""
        tensors = [getattr(self, field.name) for field in fields(self)]
        storages = [t.untyped_storage() for t in tensors if t is not None]
        return {storage.data_ptr(): storage.nbytes() for storage in storages}


class LayerFamily(Protocol):
    """How one kind of encoder layer is found, captured and recomputed selectively."""

    kind: str  # what the layers are, for error messages: "pre-LN ViT block"

    def locate(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module]] | None:
        """(the module whose call is one chunk, the encoder layers), or None if not this family."""

    def missing_parts(self, layer: nn.Module) -> list[str]:
        """The submodules this family needs that ``layer`` lacks (empty: supported)."""

    def capture_points(self, layer: nn.Module) -> list[tuple[nn.Module, Capture]]:
        """The modules whose outputs, in a stock (reference) call, give the key, value, attn_out and
        mlp_out references."""

    def parse(self, args: tuple, kwargs: dict) -> LayerCall:
        """The layer call's arguments, as given to its ``forward``, seen as frames."""

    def selective(
        self, layer: nn.Module, ref: LayerReference, call: LayerCall, select: Select
    ) -> torch.Tensor:
        """Docs section 1, selective mode: compute the keys of all tokens, ``select`` the rows, recompute
        those and reuse ``ref`` for the rest. Returns the layer output in the layer's own layout."""


class ChunkMemo:
    """What a family reads on the host from the tensors every block of a chunk shares (``cu_seqlens``, the
    rotary tables), read once per chunk rather than once per block: reading a device tensor on the host
    waits for the device. A result is kept with the very tensors it came from (so none of them is freed and
    its address reused meanwhile), for the last few."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: list[tuple[tuple[torch.Tensor, ...], object]] = []

    def get(self, tensors: tuple[torch.Tensor, ...], read: Callable[[], object]) -> object:
        for held, value in self._entries:
            if len(held) == len(tensors) and all(a is b for a, b in zip(held, tensors, strict=True)):
                return value
        value = read()
        self._entries = [(tensors, value), *self._entries[: self.size - 1]]
        return value


def gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx [F, n]`` of ``t [F, T, C]`` -> ``[F, n, C]``."""
    return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def mix_rows(ref_rows: torch.Tensor, idx: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """``ref_rows [T, C]`` repeated per frame, rows ``idx [F, n]`` replaced by ``fresh [F, n, C]``."""
    frames, _, channels = fresh.shape
    rows = idx.unsqueeze(-1).expand(-1, -1, channels)
    return ref_rows.expand(frames, *ref_rows.shape).scatter(1, rows, fresh)


def residual_and_mlp(
    hidden: torch.Tensor,
    attn_ref: torch.Tensor,
    mlp_ref: torch.Tensor,
    idx: torch.Tensor,
    attn_sel: torch.Tensor,
    norm: Callable[[torch.Tensor], torch.Tensor],
    mlp: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The end of a selective pre-LN layer: ``h1 = h + A_mix``, output ``h1 + M_mix``.

    ``hidden [F, T, C]`` is the layer input, ``attn_ref``/``mlp_ref [T, C]`` the reference's branch
    deltas, ``attn_sel [F, n, C]`` the fresh attention branch (after the output projection) of the rows
    ``idx [F, n]``. Unselected rows add the reference's deltas to their own current residual; only the
    selected rows go through ``norm`` and ``mlp``. Returns ``[F, T, C]``.
    """
    # Unselected rows: (h + A_ref) + M_ref, in the spec's order of additions, so the rounding matches.
    out = hidden + attn_ref
    out += mlp_ref
    residual_sel = gather_rows(hidden, idx) + attn_sel
    mlp_sel = mlp(norm(residual_sel))  # the norm is per token: only the selected rows are needed
    rows = idx.unsqueeze(-1).expand(-1, -1, out.shape[-1])
    return out.scatter_(1, rows, residual_sel + mlp_sel)
