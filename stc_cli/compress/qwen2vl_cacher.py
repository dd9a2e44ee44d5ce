"""STC-Cacher on the Qwen2-VL vision tower (``Qwen2VisionTransformerPretrainedModel``, transformers 5.x).

What differs from SigLIP (``docs/stc-algorithm.md`` section 1; research notes on LiveCC, 4.4):
- The input is packed, ``[N, C]`` with no batch dimension; attention is block-diagonal over the
  ``cu_seqlens`` segments, one per temporal patch (two video frames, ``gh * gw`` tokens). A segment is the
  cacher's "frame": the reference is the chunk's last segment, and a selective chunk compares each segment
  with it token by token, so all segments must have the reference's length (else the layer runs stock).
- The ``qkv`` projection is fused: K is computed for all tokens, Q and V only for the selected rows (row
  slices of the fused weight: Q ``[0, C)``, K ``[C, 2C)``, V ``[2C, 3C)``).
- The 2-D vision RoPE is applied inside attention: the selected queries are rotated with their own
  cos/sin rows, the keys of all tokens with all rows.
- Tokens are in 2x2 merge-window order, so token t is the same place in two segments only on the same
  grid; a reference is used only where the rotary positions equal its own (same token count is not
  enough: a 4x6 and a 6x4 grid both have 24 tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stc_cli.compress.cacher_family import (
    Capture,
    ChunkMemo,
    LayerCall,
    LayerReference,
    Select,
    gather_rows,
    mix_rows,
    residual_and_mlp,
)


class Qwen2VLBlocks:
    """``Qwen2VLVisionBlock``s: LayerNorm ``norm1``/``norm2``, ``attn.qkv`` (fused) and ``attn.proj``,
    MLP ``fc1``/``act``/``fc2``, called as ``block(hidden [N, C], cu_seqlens, position_embeddings=(cos,
    sin))``. Each call of the tower is one chunk."""

    kind = "Qwen2-VL vision block"
    _PARTS = ("norm1", "attn", "norm2", "mlp")
    # fc1/fc2 tell Qwen2-VL's MLP from Qwen2.5-VL's gated one and Qwen3-VL's linear_fc1: those towers have
    # families of their own (qwen25vl_cacher.py, qwen3vl_cacher.py), tried before this one.
    _SUBPARTS = {"attn": ("qkv", "proj", "num_heads", "head_dim", "scaling"), "mlp": ("fc1", "fc2")}

    def __init__(self) -> None:
        self._memo = ChunkMemo()  # the chunk's cu_seqlens as host ints, read once

    def locate(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module]] | None:
        blocks = getattr(model, "blocks", None)
        if blocks is None or not hasattr(model, "rotary_pos_emb"):  # a timm ViT has .blocks, no rotary
            return None
        return model, list(blocks)

    def missing_parts(self, layer: nn.Module) -> list[str]:
        missing = [p for p in self._PARTS if not hasattr(layer, p)]
        for part, subparts in self._SUBPARTS.items():
            module = getattr(layer, part, None)
            missing += [f"{part}.{p}" for p in subparts if module is not None and not hasattr(module, p)]
        return missing

    def capture_points(self, layer: nn.Module) -> list[tuple[nn.Module, Capture]]:
        channels = layer.attn.proj.in_features

        def qkv(out: torch.Tensor, last: slice) -> dict:  # [N, 3C]: Q | K | V, heads concatenated
            rows = out[last]
            return {"key": rows[:, channels : 2 * channels], "value": rows[:, 2 * channels :]}

        return [
            (layer.attn.qkv, qkv),
            (layer.attn, lambda out, last: {"attn_out": out[last]}),
            (layer.mlp, lambda out, last: {"mlp_out": out[last]}),
        ]

    def parse(self, args: tuple, kwargs: dict) -> LayerCall:
        hidden = args[0] if args else kwargs["hidden_states"]
        cu_seqlens = args[1] if len(args) > 1 else kwargs["cu_seqlens"]
        rope = args[2] if len(args) > 2 else kwargs.get("position_embeddings")
        bounds = self._memo.get((cu_seqlens,), cu_seqlens.tolist)
        lengths = {end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)}
        frames = None
        if rope is not None and len(lengths) == 1 and bounds[0] == 0 and bounds[-1] == hidden.shape[0]:
            frames = hidden.view(len(bounds) - 1, lengths.pop(), hidden.shape[-1])  # [S, T, C]
        # The cos table alone identifies each token's (h, w): its first channels are cos(h) and cos(w) at
        # frequency 1, and cos of two different small integers never coincide. One tensor for all blocks
        # of a chunk, so the references share it.
        positions = None if rope is None else rope[0]
        return LayerCall(frames, slice(bounds[-2], bounds[-1]), positions, context=rope)

    def selective(
        self, layer: nn.Module, ref: LayerReference, call: LayerCall, select: Select
    ) -> torch.Tensor:
        """Selective block over ``S`` segments of ``T`` tokens: ``call.frames [S, T, C]`` -> ``[S * T, C]``.

        Keys are compared before RoPE: the projection output the spec names (``K = k_proj(x)``), captured at
        the same point in reference chunks. A segment and its reference have the same rotary positions
        (checked) and the rotation is orthogonal per head, so the cosine equals that of the rotated keys the
        attention uses; comparing before spares rotating ``K_ref``.
        """
        attn, hidden = layer.attn, call.frames
        segments, tokens, channels = hidden.shape
        cos, sin = (t.view(segments, tokens, -1) for t in call.context[:2])  # [S, T, D]

        def project(x: torch.Tensor, part: int) -> torch.Tensor:  # part 0: Q, 1: K, 2: V
            rows = slice(part * channels, (part + 1) * channels)
            bias = attn.qkv.bias
            return F.linear(x, attn.qkv.weight[rows], None if bias is None else bias[rows])

        def heads(t: torch.Tensor) -> torch.Tensor:  # [S, L, C] -> [S, L, H, D]
            return t.view(segments, t.shape[1], attn.num_heads, attn.head_dim)

        normed = layer.norm1(hidden)
        key = project(normed, 1)  # all tokens, before RoPE
        idx = select(key)  # [S, n]
        normed_sel = gather_rows(normed, idx)
        query = _rotate(heads(project(normed_sel, 0)), gather_rows(cos, idx), gather_rows(sin, idx))
        key = _rotate(heads(key), cos, sin)
        value = heads(mix_rows(ref.value, idx, project(normed_sel, 2)))
        attn_sel = self.attend(query, key, value, idx, call, attn.scaling)
        attn_sel = attn.proj(attn_sel.reshape(segments, idx.shape[1], channels))
        out = residual_and_mlp(hidden, ref.attn_out, ref.mlp_out, idx, attn_sel, layer.norm2, layer.mlp)
        return out.view(segments * tokens, channels)

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        idx: torch.Tensor,
        call: LayerCall,
        scale: float,
    ) -> torch.Tensor:
        """Attention of the selected queries ``[S, n, H, D]`` (rows ``idx [S, n]``) over the keys and values
        ``[S, T, H, D]`` of the block's attention segments -> ``[S, n, H, D]``. Here a segment is a frame:
        they share T, so a batch over them is the stock block-diagonal attention."""
        attn_sel = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
        )
        return attn_sel.transpose(1, 2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Vision RoPE as transformers' ``apply_rotary_pos_emb_vision`` (float32 math, rotate-half pairs):
    ``x [..., L, H, D]``, ``cos``/``sin [..., L, D]``."""
    dtype = x.dtype
    x, cos, sin = x.float(), cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(dtype)
