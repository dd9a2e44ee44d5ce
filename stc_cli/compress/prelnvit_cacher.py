"""STC-Cacher on SigLIP and CLIP encoder layers: pre-LN blocks with separate q/k/v/out projections, frames
as the batch dimension (``[F, T, C]``), no positions inside the layer (they are added before the encoder).

The layer math is written as plain functions of tensors (``layer_outputs``, ``selective_layer``) over a
layer's ``Weights``, so that ``torch.compile`` can fuse it the same way for the stock layer and for the
cacher's two paths (``STCCacher(compile=True)``, ``stc_cli/accel/compiled_layers.py``): the same
function with the same weights gives one compiled graph for all layers of a tower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from stc_cli.compress.cacher_family import (
    Capture,
    LayerCall,
    LayerReference,
    Select,
    gather_rows,
    mix_rows,
    residual_and_mlp,
)

Linear = tuple[torch.Tensor, torch.Tensor | None]  # (weight, bias)


class Weights(NamedTuple):
    """One layer's parameters (the module's own tensors, not copies) and constants."""

    norm1: Linear
    q: Linear
    k: Linear
    v: Linear
    out: Linear
    norm2: Linear
    fc1: Linear
    fc2: Linear
    heads: int
    scale: float
    eps: float
    act: Callable[[torch.Tensor], torch.Tensor]


def weights_of(layer: nn.Module) -> Weights:
    attn, mlp = layer.self_attn, layer.mlp
    parts = (layer.layer_norm1, attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, layer.layer_norm2)
    pairs = [(m.weight, m.bias) for m in (*parts, mlp.fc1, mlp.fc2)]
    heads = attn.q_proj.out_features // attn.head_dim
    return Weights(*pairs, heads, attn.scale, layer.layer_norm1.eps, _plain(mlp.activation_fn))


def _plain(activation: nn.Module) -> Callable:
    """The activation as a plain function where transformers keeps one (GELU variants), so that every
    layer's weights name the same function and a compiled layer is not compiled again per layer."""
    act = getattr(activation, "act", None)
    if isinstance(act, functools.partial) or callable(act) and not isinstance(act, nn.Module):
        return act
    if type(activation).__name__ == "QuickGELUActivation":  # CLIP
        return quick_gelu
    return activation


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # transformers' QuickGELUActivation


def _norm(x: torch.Tensor, norm: Linear, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), *norm, eps)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:  # [F, L, C] -> [F, H, L, C / H]
    return t.view(*t.shape[:2], heads, -1).transpose(1, 2)


def _attention(query, key, value, w: Weights) -> torch.Tensor:
    """Attention of ``query [F, L, C]`` over ``key``/``value [F, T, C]``, after the output projection."""
    out = F.scaled_dot_product_attention(
        _heads(query, w.heads), _heads(key, w.heads), _heads(value, w.heads), scale=w.scale
    )
    return F.linear(out.transpose(1, 2).reshape(query.shape), *w.out)


def layer_outputs(hidden: torch.Tensor, w: Weights) -> tuple[torch.Tensor, ...]:
    """The stock layer on ``hidden [F, T, C]`` -> (output, then what a reference keeps: K, V, the attention
    branch after the output projection, the MLP branch), each ``[F, T, C]``."""
    normed = _norm(hidden, w.norm1, w.eps)
    key, value = F.linear(normed, *w.k), F.linear(normed, *w.v)
    attn_out = _attention(F.linear(normed, *w.q), key, value, w)
    hidden = hidden + attn_out
    mlp_out = F.linear(w.act(F.linear(_norm(hidden, w.norm2, w.eps), *w.fc1)), *w.fc2)
    return hidden + mlp_out, key, value, attn_out, mlp_out


def select_lowest(key: torch.Tensor, key_ref: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``[F, n]`` of the ``n`` tokens whose keys ``[F, T, C]`` have the lowest cosine to the
    reference's ``[T, C]``; unsorted: a selective layer gathers and scatters the same rows in any order,
    and topk's sort took 0.65 of a selective forward's 10.3 ms of GPU time on an H200."""
    sim = key_cosine(key.float(), key_ref.float())  # [F, T]
    return sim.topk(n, dim=1, largest=False, sorted=False).indices


def key_cosine(key: torch.Tensor, key_ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``F.cosine_similarity(key [F, T, C], key_ref [T, C], dim=-1)`` in the same steps, so bit for bit (the
    tests check it, on a GPU too), without its two copies of the norms (at one frame per call an H200
    waits for a selective layer's launches) and with the reference's norm taken once, not per frame."""
    key = key / torch.linalg.vector_norm(key, dim=-1, keepdim=True).clamp_min_(eps)
    key_ref = key_ref / torch.linalg.vector_norm(key_ref, dim=-1, keepdim=True).clamp_min_(eps)
    return (key * key_ref).sum(dim=-1)


def selective_layer(
    hidden: torch.Tensor,
    ref: tuple[torch.Tensor, ...],
    w: Weights,
    select: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Docs section 1, selective mode, on ``hidden [F, T, C]`` with the reference's ``(K, V, A, M)``, each
    ``[T, C]``: the selected queries (``select(keys, K) -> [F, n]``) attend over all T fresh keys and
    over values that are fresh only at the selected rows. Returns (output ``[F, T, C]``, the indices)."""
    key_ref, value_ref, attn_ref, mlp_ref = ref
    normed = _norm(hidden, w.norm1, w.eps)
    key = F.linear(normed, *w.k)  # all tokens, computed once
    idx = select(key, key_ref)
    normed_sel = gather_rows(normed, idx)
    value = mix_rows(value_ref, idx, F.linear(normed_sel, *w.v))
    attn_sel = _attention(F.linear(normed_sel, *w.q), key, value, w)

    def mlp(x: torch.Tensor) -> torch.Tensor:
        return F.linear(w.act(F.linear(x, *w.fc1)), *w.fc2)

    norm2 = functools.partial(_norm, norm=w.norm2, eps=w.eps)
    return residual_and_mlp(hidden, attn_ref, mlp_ref, idx, attn_sel, norm2, mlp), idx


class PreLNViTLayers:
    """SigLIP and CLIP encoder layers (``LayerFamily``)."""

    kind = "pre-LN ViT block"
    _PARTS = ("layer_norm1", "self_attn", "layer_norm2", "mlp")
    _ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj")

    def __init__(self) -> None:
        self._weights: dict[nn.Module, Weights] = {}

    def weights(self, layer: nn.Module) -> Weights:
        """``weights_of(layer)``, gathered once per layer (about 17 us each time on the dev CPU, 26 times a
        chunk). It holds the modules' own parameters, which ``.to()`` and ``.half()`` change in place."""
        if layer not in self._weights:
            self._weights[layer] = weights_of(layer)
        return self._weights[layer]

    def locate(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module]] | None:
        encoder = getattr(getattr(model, "vision_model", model), "encoder", None)
        layers = getattr(encoder, "layers", None)
        return None if layers is None else (encoder, list(layers))

    def missing_parts(self, layer: nn.Module) -> list[str]:
        attn = getattr(layer, "self_attn", None)
        missing = [p for p in self._PARTS if not hasattr(layer, p)]
        return missing + [
            f"self_attn.{p}" for p in self._ATTENTION_PARTS if attn is not None and not hasattr(attn, p)
        ]

    def capture_points(self, layer: nn.Module) -> list[tuple[nn.Module, Capture]]:
        attn = layer.self_attn
        return [
            (attn.k_proj, lambda out, last: {"key": out[last]}),
            (attn.v_proj, lambda out, last: {"value": out[last]}),
            (attn, lambda out, last: {"attn_out": (out[0] if isinstance(out, tuple) else out)[last]}),
            (layer.mlp, lambda out, last: {"mlp_out": out[last]}),
        ]

    def parse(self, args: tuple, kwargs: dict) -> LayerCall:
        hidden = args[0] if args else kwargs["hidden_states"]
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        return LayerCall(frames=hidden, last=-1, context=mask)

    def selective(
        self, layer: nn.Module, ref: LayerReference, call: LayerCall, select: Select
    ) -> torch.Tensor:
        if call.context is not None:
            raise ValueError("STCCacher's selective pass supports unmasked vision encoders only")
        refs = (ref.key, ref.value, ref.attn_out, ref.mlp_out)
        return selective_layer(call.frames, refs, self.weights(layer), lambda key, _ref: select(key))[0]
