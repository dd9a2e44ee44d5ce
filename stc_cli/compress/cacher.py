"""STC-Cacher: selective recompute inside every layer of a ViT encoder.

One forward call of the attached vision model is one chunk: a batch of frames (SigLIP, CLIP) or a packed
sequence of temporal patches (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), in temporal order. Chunk ``c`` (counted
from 0 after ``reset()``) is a *reference* chunk when ``c % interval == 0``: every layer runs stock and
keeps, from the chunk's last frame, its key K, value V, attention branch A (after the output projection)
and MLP branch M, each ``[T, C]``. Any other chunk is *selective*: each layer recomputes only the tokens
whose keys changed most against its reference and reuses the reference's V rows and branch deltas for the
rest (``docs/stc-algorithm.md``, section 1). What differs between layer kinds is behind ``LayerFamily``.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from stc_cli.compress.cacher_family import Capture, LayerCall, LayerFamily, LayerReference
from stc_cli.compress.prelnvit_cacher import (
    PreLNViTLayers,
    key_cosine,
    layer_outputs,
    select_lowest,
    selective_layer,
)
from stc_cli.compress.qwen2vl_cacher import Qwen2VLBlocks
from stc_cli.compress.qwen3vl_cacher import Qwen3VLBlocks
from stc_cli.compress.qwen25vl_cacher import Qwen25VLBlocks


class STCCacher:
    """Reuse ViT work on tokens that did not change since the latest reference frame.

    Args:
        update_ratio: share of tokens each layer recomputes in a selective chunk,
            ``n = clamp(int(T * update_ratio), 1, T)``. 1.0 recomputes everything (stock output).
        interval: chunk ``c`` is a reference chunk when ``c % interval == 0``; 1 disables caching.
        similarity_threshold: if set, recompute instead every token whose key cosine similarity to the
            reference is below it (at least one per frame), so cost follows motion. Off by default,
            as in the authors' released code.
        compile: run every layer's math (reference and selective chunks) through ``torch.compile``,
            which fuses its small kernels; SigLIP and CLIP towers at a fixed ``update_ratio`` only.
            Compare with a stock tower compiled the same way (``stc_cli.accel.compile_layers``).

    A "frame" is a batch row for SigLIP/CLIP and a temporal patch (two frames, one ``cu_seqlens``
    segment) for the Qwen-VL towers. Selective layers compute attention for the selected queries only, so
    ``output_attentions`` yields no weights for a selective chunk (the released code returned None too).

    Example:
        >>> cacher = STCCacher(update_ratio=0.25, interval=2)
        >>> cacher.attach(vision_model)  # SigLIP, CLIP, or a Qwen-VL's model.model.visual
        >>> out = vision_model(pixel_values=frames, output_hidden_states=True)  # one chunk
        >>> out = qwen2vl_tower(pixel_values, grid_thw=grid_thw)  # or: packed temporal patches
        >>> cacher.reset()  # before the next video
        >>> cacher.detach()
    """

    def __init__(
        self,
        update_ratio: float = 0.25,
        interval: int = 2,
        *,
        similarity_threshold: float | None = None,
        compile: bool = False,
    ) -> None:
        if not 0.0 < update_ratio <= 1.0:
            raise ValueError(f"update_ratio must be in (0, 1], got {update_ratio}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an integer >= 1, got {interval!r}")
        if similarity_threshold is not None and not -1.0 <= similarity_threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be a cosine in [-1, 1], got {similarity_threshold}")
        self.update_ratio = update_ratio
        self.interval = interval
        self.similarity_threshold = similarity_threshold
        self.compile = compile
        self._compiled: tuple | None = None  # (reference, selective) math, compiled at attach
        self._model: nn.Module | None = None
        self._family: LayerFamily | None = None
        self._layers: list[nn.Module] = []
        self._saved_forwards: list[object] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._references: list[LayerReference] = []
        self._capturing: tuple[LayerReference, LayerCall] | None = None
        self._chunk = 0
        self._selective_chunk = False
        self._compared: dict[tuple, tuple] = {}  # this chunk's position checks (``_same_positions``)
        self.selected: list[torch.Tensor | None] = []
        """Per layer, the token indices ``[F, n]`` recomputed in the latest chunk (a set per frame, in no
        particular order), None if the layer ran stock. With ``similarity_threshold`` they are sorted, most
        changed first, and a frame with fewer changed tokens repeats its first index."""

    # -- lifecycle -------------------------------------------------------------------------------

    def attach(self, vision_model: nn.Module) -> STCCacher:
        """Patch every encoder layer of ``vision_model``: layers at ``.encoder.layers`` or
        ``.vision_model.encoder.layers`` (SigLIP, CLIP), or the ``.blocks`` of a Qwen2-VL, Qwen2.5-VL or
        Qwen3-VL vision tower (their ``...ForConditionalGeneration.model.visual``). Returns self."""
        if self._model is not None:
            raise ValueError("this STCCacher is already attached to a model; call detach() first")
        if getattr(vision_model, "_stc_cacher", None) is not None:
            raise ValueError(
                f"{type(vision_model).__name__} already has an STCCacher attached; detach it first"
            )
        family, chunk_module, layers = _locate(vision_model)
        for i, layer in enumerate(layers):
            if missing := family.missing_parts(layer):
                raise ValueError(
                    f"encoder layer {i} ({type(layer).__name__}) is not a {family.kind}: missing {missing}"
                )

        if self.compile:
            if not isinstance(family, PreLNViTLayers) or self.similarity_threshold is not None:
                raise ValueError("compile=True supports SigLIP and CLIP towers without similarity_threshold")
            self._compiled = (compiled(layer_outputs), compiled(_selective_lowest))
        self._model, self._family = vision_model, family
        vision_model._stc_cacher = self
        self._layers = layers
        self._references = [LayerReference() for _ in self._layers]
        self.selected = [None] * len(self._layers)
        self._hooks.append(chunk_module.register_forward_pre_hook(self._start_chunk))
        for i, (layer, ref) in enumerate(zip(self._layers, self._references, strict=True)):
            for module, capture in family.capture_points(layer):
                self._hooks.append(module.register_forward_hook(self._capture_hook(ref, capture)))
            self._saved_forwards.append(layer.__dict__.get("forward"))
            layer.forward = self._patched_forward(i, layer.forward)
        self.reset()
        return self

    def detach(self) -> None:
        """Restore the stock layers and drop all state. A no-op when not attached."""
        if self._model is None:
            return
        for handle in self._hooks:
            handle.remove()
        for layer, saved in zip(self._layers, self._saved_forwards, strict=True):
            if saved is None:
                del layer.forward
            else:
                layer.forward = saved
        del self._model._stc_cacher
        self._model, self._family, self._layers, self._saved_forwards, self._hooks = None, None, [], [], []
        self._references, self.selected = [], []

    def reset(self) -> None:
        """Start a new video or stream: drop the references; the next chunk is a reference chunk."""
        self._chunk = 0
        for ref in self._references:
            ref.clear()
        self.selected = [None] * len(self._layers)

    def state_nbytes(self) -> int:
        """Bytes held by the references: per layer, the reference chunk's K, V, A and M outputs (whole
        chunk, all frames; shared storage counted once). Bounded: replaced, never accumulated."""
        storages: dict[int, int] = {}
        for ref in self._references:
            storages.update(ref.storages())
        return sum(storages.values())

    # -- replay from CUDA graphs (stc_cli/accel/tower_graphs.py) ----------------------------------

    def replay_key(self) -> tuple:
        """What the next chunk's recorded work depends on besides its input: whether it is selective, and
        then where the references live (a CUDA graph reads them by address: other storage, another graph).
        SigLIP and CLIP towers at a fixed ``update_ratio`` only: elsewhere the selective work depends on
        positions, or waits for the host."""
        if not isinstance(self._family, PreLNViTLayers) or self.similarity_threshold is not None:
            raise ValueError(
                "CUDA graphs replay STC-Cacher on SigLIP and CLIP towers without similarity_threshold only"
            )
        if self._chunk % self.interval == 0:
            return ("reference",)
        fields = ("key", "value", "attn_out", "mlp_out")
        where = [getattr(ref, f) for ref in self._references for f in fields]
        return ("selective", *(0 if t is None else t.data_ptr() for t in where))

    def chunk_state(self) -> tuple:
        """What the chunk just run left behind: each layer's references and selected indices."""
        return [dataclasses.replace(ref) for ref in self._references], list(self.selected)

    def replayed(self, state: tuple) -> None:
        """A chunk recorded after ``chunk_state`` returned ``state`` was replayed without Python: count it
        and put back what it left (its tensors hold the replay's values, in the same storage)."""
        references, selected = state
        self._chunk += 1
        for ref, saved in zip(self._references, references, strict=True):
            ref.__dict__.update(saved.__dict__)
        self.selected = list(selected)

    # -- hooks -----------------------------------------------------------------------------------

    def _start_chunk(self, _module: nn.Module, _args: tuple) -> None:
        self._selective_chunk = self._chunk % self.interval != 0
        self._chunk += 1
        self._compared.clear()

    def _same_positions(self, positions: torch.Tensor, ref_positions: torch.Tensor) -> bool:
        """Whether a layer call's positions equal its reference's, compared once per chunk: reading the
        answer waits for the device, and every layer of a chunk gets the same positions tensor (the
        tower's rotary table), every layer's reference a view of the same one."""
        key = tuple((t.data_ptr(), t.shape, t.stride(), t.dtype) for t in (positions, ref_positions))
        if key not in self._compared:  # held till the chunk ends: no other tensor takes their addresses
            self._compared[key] = (bool((positions == ref_positions).all()), positions, ref_positions)
        return self._compared[key][0]

    def _capture_hook(self, ref: LayerReference, capture: Capture):
        def hook(_module: nn.Module, _args: tuple, output) -> None:
            if self._capturing is not None and self._capturing[0] is ref:
                # Views, not copies: the stock layer never writes into these outputs again.
                for field, tensor in capture(output, self._capturing[1].last).items():
                    setattr(ref, field, tensor.detach())

        return hook

    def _patched_forward(self, index: int, stock_forward):
        ref, layer, family = self._references[index], self._layers[index], self._family

        def select(key: torch.Tensor) -> torch.Tensor:
            self.selected[index] = self._select(key, ref.key)
            return self.selected[index]

        def forward(*args, **kwargs):
            call = family.parse(args, kwargs)
            if self._compiled:
                return run_compiled(call)
            if self._selective_chunk and ref.usable_for(call, self._same_positions):
                return family.selective(layer, ref, call, select)
            self.selected[index] = None
            self._capturing = (ref, call)
            try:
                out = stock_forward(*args, **kwargs)
            finally:
                self._capturing = None
            ref.positions = None if call.positions is None else call.positions[call.last]
            return out

        def run_compiled(call: LayerCall) -> torch.Tensor:  # the same steps, as functions of tensors
            if call.context is not None:
                raise ValueError("STCCacher(compile=True) supports unmasked vision encoders only")
            reference, selective = self._compiled
            weights, hidden = family.weights(layer), call.frames
            if self._selective_chunk and ref.usable_for(call, self._same_positions):
                refs = (ref.key, ref.value, ref.attn_out, ref.mlp_out)
                out, self.selected[index] = selective(hidden, refs, weights, self._count(hidden.shape[1]))
                return out
            out, *kept = reference(hidden, weights)
            ref.key, ref.value, ref.attn_out, ref.mlp_out = (t[-1] for t in kept)
            self.selected[index] = None
            return out

        return forward

    # -- selection -------------------------------------------------------------------------------

    def _count(self, tokens: int) -> int:
        """Tokens a selective layer recomputes per frame at ``update_ratio``."""
        return min(max(int(tokens * self.update_ratio), 1), tokens)

    def _select(self, key: torch.Tensor, key_ref: torch.Tensor) -> torch.Tensor:
        """Indices ``[F, n]`` of the tokens to recompute: those whose keys are least like the reference."""
        if self.similarity_threshold is None:
            return select_lowest(key, key_ref, self._count(key.shape[1]))
        sim = key_cosine(key.float(), key_ref.float())  # [F, T]
        changed = (sim < self.similarity_threshold).sum(dim=1).clamp(min=1)  # [F]
        n = int(changed.max())
        idx = sim.topk(n, dim=1, largest=False).indices
        # Frames with fewer changed tokens repeat their most-changed one: a duplicate recomputes the
        # same row and scatters the same value, so the batch stays rectangular and exact.
        pad = torch.arange(n, device=idx.device) >= changed.unsqueeze(1)
        return torch.where(pad, idx[:, :1], idx)


def compiled(layer_math):
    """``layer_math`` through ``torch.compile``, one static graph per input shape (what CUDA graphs want)."""
    return torch.compile(layer_math, dynamic=False)


def _selective_lowest(hidden, refs, weights, n: int):
    return selective_layer(hidden, refs, weights, functools.partial(select_lowest, n=n))


def _locate(model: nn.Module) -> tuple[LayerFamily, nn.Module, list[nn.Module]]:
    for family in (PreLNViTLayers(), Qwen25VLBlocks(), Qwen3VLBlocks(), Qwen2VLBlocks()):
        if (found := family.locate(model)) is not None:
            return family, *found
    raise ValueError(
        f"cannot find the encoder layers of {type(model).__name__}: expected .encoder.layers or "
        ".vision_model.encoder.layers (transformers SiglipVisionModel, CLIPVisionModel) or the .blocks of a "
        "Qwen2-VL, Qwen2.5-VL or Qwen3-VL vision tower (for their ForConditionalGeneration classes: pass "
        "model.model.visual)"
    )
