"""STC-Cacher: selective recompute inside every layer of a ViT encoder.

One forward call of the attached vision model is one chunk; its batch holds the chunk's frames in
temporal order. Chunk ``c`` (counted from 0 after ``reset()``) is a *reference* chunk when
``c % interval == 0``: every layer runs stock and keeps, from the chunk's last frame, its key K, value V,
attention branch A (after ``out_proj``) and MLP branch M, each ``[T, C]``. Any other chunk is
*selective*: each layer recomputes only the tokens whose keys changed most against its reference and
reuses the reference's V rows and branch deltas for the rest (``docs/stc-algorithm.md``, section 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

_LAYER_PARTS = ("layer_norm1", "self_attn", "layer_norm2", "mlp")
_ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class _LayerReference:
    """One layer's tensors from the last frame of the latest reference chunk, each ``[T, C]``."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    attn_out: torch.Tensor | None = None
    mlp_out: torch.Tensor | None = None

    def usable_for(self, hidden: torch.Tensor) -> bool:
        """Whether a selective pass over ``hidden [F, T, C]`` can reuse this reference."""
        ref = self.mlp_out
        return (
            ref is not None
            and ref.shape == hidden.shape[1:]
            and ref.dtype == hidden.dtype
            and ref.device == hidden.device
        )

    def clear(self) -> None:
        for field in fields(self):
            setattr(self, field.name, None)

    def nbytes(self) -> int:
        """Bytes kept alive: the whole chunk's outputs, as the references are views of them."""
        tensors = (getattr(self, field.name) for field in fields(self))
        return sum(t.untyped_storage().nbytes() for t in tensors if t is not None)


class STCCacher:
    """Reuse ViT work on tokens that did not change since the latest reference frame.

    Args:
        update_ratio: share of tokens each layer recomputes in a selective chunk,
            ``n = clamp(int(T * update_ratio), 1, T)``. 1.0 recomputes everything (stock output).
        interval: chunk ``c`` is a reference chunk when ``c % interval == 0``; 1 disables caching.
        similarity_threshold: if set, recompute instead every token whose key cosine similarity to the
            reference is below it (at least one per frame), so cost follows motion. Off by default,
            as in the authors' released code.

    Selective layers compute attention for the selected queries only, so ``output_attentions`` yields
    no weights for a selective chunk (the released code returned None there too).

    Example:
        >>> cacher = STCCacher(update_ratio=0.25, interval=2)
        >>> cacher.attach(vision_model)          # SiglipVisionModel or CLIPVisionModel
        >>> out = vision_model(pixel_values=frames, output_hidden_states=True)   # one chunk
        >>> cacher.reset()                       # before the next video
        >>> cacher.detach()
    """

    def __init__(
        self,
        update_ratio: float = 0.25,
        interval: int = 2,
        *,
        similarity_threshold: float | None = None,
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
        self._model: nn.Module | None = None
        self._layers: list[nn.Module] = []
        self._saved_forwards: list[object] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._references: list[_LayerReference] = []
        self._capturing: _LayerReference | None = None
        self._chunk = 0
        self._selective_chunk = False
        self.selected: list[torch.Tensor | None] = []
        """Per layer, the token indices ``[F, n]`` recomputed in the latest chunk, None if the layer ran
        stock. With ``similarity_threshold`` a frame with fewer changed tokens repeats its first index."""

    # -- lifecycle -------------------------------------------------------------------------------

    def attach(self, vision_model: nn.Module) -> STCCacher:
        """Patch every encoder layer of ``vision_model`` (layers at ``.encoder.layers`` or
        ``.vision_model.encoder.layers``). Returns self."""
        if self._model is not None:
            raise ValueError("this STCCacher is already attached to a model; call detach() first")
        if getattr(vision_model, "_stc_cacher", None) is not None:
            raise ValueError(
                f"{type(vision_model).__name__} already has an STCCacher attached; detach it first"
            )
        encoder = getattr(getattr(vision_model, "vision_model", vision_model), "encoder", None)
        layers = getattr(encoder, "layers", None)
        if layers is None:
            raise ValueError(
                f"cannot find the encoder layers of {type(vision_model).__name__}: expected .encoder.layers "
                "or .vision_model.encoder.layers (a transformers SiglipVisionModel or CLIPVisionModel)"
            )
        for i, layer in enumerate(layers):
            attn = getattr(layer, "self_attn", None)
            missing = [p for p in _LAYER_PARTS if not hasattr(layer, p)]
            missing += [
                f"self_attn.{p}" for p in _ATTENTION_PARTS if attn is not None and not hasattr(attn, p)
            ]
            if missing:
                raise ValueError(
                    f"encoder layer {i} ({type(layer).__name__}) is not a pre-LN ViT block: missing {missing}"
                )

        self._model = vision_model
        vision_model._stc_cacher = self
        self._layers = list(layers)
        self._references = [_LayerReference() for _ in self._layers]
        self.selected = [None] * len(self._layers)
        self._hooks.append(encoder.register_forward_pre_hook(self._start_chunk))
        for i, (layer, ref) in enumerate(zip(self._layers, self._references, strict=True)):
            attn = layer.self_attn
            for module, field in (
                (attn.k_proj, "key"),
                (attn.v_proj, "value"),
                (attn, "attn_out"),
                (layer.mlp, "mlp_out"),
            ):
                self._hooks.append(module.register_forward_hook(self._capture_hook(ref, field)))
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
        self._model, self._layers, self._saved_forwards, self._hooks = None, [], [], []
        self._references, self.selected = [], []

    def reset(self) -> None:
        """Start a new video or stream: drop the references; the next chunk is a reference chunk."""
        self._chunk = 0
        for ref in self._references:
            ref.clear()
        self.selected = [None] * len(self._layers)

    def state_nbytes(self) -> int:
        """Bytes held by the references: four ``[F, T, C]`` chunk outputs per layer, F the reference
        chunk's frames (bounded: they are replaced, not accumulated)."""
        return sum(ref.nbytes() for ref in self._references)

    # -- hooks -----------------------------------------------------------------------------------

    def _start_chunk(self, _encoder: nn.Module, _args: tuple) -> None:
        self._selective_chunk = self._chunk % self.interval != 0
        self._chunk += 1

    def _capture_hook(self, ref: _LayerReference, field: str):
        def hook(_module: nn.Module, _args: tuple, output) -> None:
            if self._capturing is ref:
                # A view, not a copy: the stock layer never writes into these outputs again.
                setattr(ref, field, (output[0] if isinstance(output, tuple) else output)[-1].detach())

        return hook

    def _patched_forward(self, index: int, stock_forward):
        ref = self._references[index]
        layer = self._layers[index]

        def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
            if self._selective_chunk and ref.usable_for(hidden_states):
                if attention_mask is not None:
                    raise ValueError("STCCacher's selective pass supports unmasked vision encoders only")
                normed = layer.layer_norm1(hidden_states)
                key = layer.self_attn.k_proj(normed)  # all tokens, computed once
                self.selected[index] = self._select(key, ref.key)
                return _selective_layer(layer, ref, hidden_states, normed, key, self.selected[index])
            self.selected[index] = None
            self._capturing = ref
            try:
                return stock_forward(hidden_states, attention_mask, *args, **kwargs)
            finally:
                self._capturing = None

        return forward

    # -- selection -------------------------------------------------------------------------------

    def _select(self, key: torch.Tensor, key_ref: torch.Tensor) -> torch.Tensor:
        """Indices ``[F, n]`` of the tokens to recompute, lowest key cosine to the reference first."""
        sim = F.cosine_similarity(key.float(), key_ref.float().unsqueeze(0), dim=-1)  # [F, T]
        tokens = sim.shape[1]
        if self.similarity_threshold is None:
            n = min(max(int(tokens * self.update_ratio), 1), tokens)
            return sim.topk(n, dim=1, largest=False).indices
        changed = (sim < self.similarity_threshold).sum(dim=1).clamp(min=1)  # [F]
        n = int(changed.max())
        idx = sim.topk(n, dim=1, largest=False).indices
        # Frames with fewer changed tokens repeat their most-changed one: a duplicate recomputes the
        # same row and scatters the same value, so the batch stays rectangular and exact.
        pad = torch.arange(n, device=idx.device) >= changed.unsqueeze(1)
        return torch.where(pad, idx[:, :1], idx)


def _selective_layer(
    layer: nn.Module,
    ref: _LayerReference,
    hidden: torch.Tensor,
    normed: torch.Tensor,
    key: torch.Tensor,
    idx: torch.Tensor,
) -> torch.Tensor:
    """One encoder layer that recomputes only the rows ``idx [F, n]`` of ``hidden [F, T, C]``.

    ``normed`` is ``layer_norm1(hidden)`` and ``key`` its key projection, both for all tokens. The
    selected queries attend over all T fresh keys and over values that are fresh only at ``idx``; the
    other rows add the reference's attention and MLP branch deltas to their own current residual.
    Shapes: ``hidden, normed, key [F, T, C]``; returns ``[F, T, C]``.
    """
    attn = layer.self_attn
    frames, tokens, channels = hidden.shape
    rows = idx.unsqueeze(-1).expand(-1, -1, channels)
    normed_sel = normed.gather(1, rows)
    query = attn.q_proj(normed_sel)
    value = ref.value.expand(frames, tokens, channels).scatter(1, rows, attn.v_proj(normed_sel))

    def heads(t: torch.Tensor) -> torch.Tensor:  # [F, L, C] -> [F, H, L, C / H]
        return t.view(frames, t.shape[1], -1, attn.head_dim).transpose(1, 2)

    attn_sel = F.scaled_dot_product_attention(heads(query), heads(key), heads(value), scale=attn.scale)
    attn_sel = attn.out_proj(attn_sel.transpose(1, 2).reshape(frames, idx.shape[1], channels))

    # Unselected rows: (h + A_ref) + M_ref, in the spec's order of additions, so the rounding matches.
    out = hidden + ref.attn_out
    out += ref.mlp_out
    residual_sel = hidden.gather(1, rows) + attn_sel
    mlp_sel = layer.mlp(layer.layer_norm2(residual_sel))  # LayerNorm is per token: only the selected
    return out.scatter_(1, rows, residual_sel + mlp_sel)
