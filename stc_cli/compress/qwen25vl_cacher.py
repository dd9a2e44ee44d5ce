"""STC-Cacher on the Qwen2.5-VL vision tower (``Qwen2_5_VisionTransformerPretrainedModel``, transformers 5.x).

Its blocks are Qwen2-VL's (fused ``qkv``, 2-D vision RoPE inside attention, packed ``[N, C]`` input; see
``qwen2vl_cacher.py``) with RMSNorm and a gated MLP (``gate_proj``/``up_proj``/``down_proj``), and with
window attention. What that changes:

- Window order. Before the first block the tower permutes the tokens (and the rotary tables) by
  ``window_index``: merge units (2x2 patches) are regrouped window by window, each window
  ``window_size`` pixels square (112 px: 4x4 merge units, 64 tokens; edge windows are smaller). The blocks
  only ever see window order; the tower undoes it after the patch merger (``argsort(window_index)``), so
  the cacher, which lives inside the blocks, needs no reverse index: its outputs go through the tower's.
  Token indices (``STCCacher.selected``) are in window order.
- Frames. The cacher's frame is, as for Qwen2-VL, a temporal patch (two video frames, ``gh * gw`` tokens):
  ``window_index`` is built per temporal patch, so each one stays a contiguous block of the sequence and
  all patches on one grid share one window order; token t of a patch and token t of the reference are the
  same (h, w). Windowed blocks are not given the temporal-patch bounds (their ``cu_seqlens`` are the
  windows), so the frames are read off the positions: every temporal patch starts with its (0, 0) token
  (first merge unit of its first window), which no other token of the patch has; a patch starts wherever
  the rotary cos|sin row of the chunk's first token recurs (sin(h) is 0 only at h = 0). Patches of unequal
  length (mixed grids) run stock; the reference is then the last patch. As for Qwen2-VL a reference
  serves only frames whose rotary positions equal its own, so a grid change runs a reference pass.
- Windows. Selection, K/V references and the branch deltas are per frame, as the spec says; only the
  attention is restricted: a selected query attends over the fresh keys and the mixed values of its own
  attention segment, taken from the block's own ``cu_seqlens``: a window in windowed blocks, the whole
  temporal patch in the ``fullatt_block_indexes`` blocks. So both kinds of block run the same code and
  follow the tower's partition whatever it is. Segments equal to the frames batch as for Qwen2-VL;
  windows batch as one padded ``[windows, the most a window can hold, longest window]`` attention (its
  shape known on the host: reading the busiest window's count would wait for the device), masked only
  when the windows differ in length (at most the stock window attention's cost).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stc_cli.compress.cacher_family import LayerCall
from stc_cli.compress.qwen2vl_cacher import Qwen2VLBlocks


class Qwen25VLBlocks(Qwen2VLBlocks):
    """``Qwen2_5_VLVisionBlock``s: RMSNorm ``norm1``/``norm2``, ``attn.qkv`` (fused) and ``attn.proj``,
    gated MLP, called as ``block(hidden [N, C], cu_seqlens (windows or temporal patches), max_seqlen,
    position_embeddings=(cos, sin))`` in window order. Each call of the tower is one chunk. A tower is
    this family's when it has ``fullatt_block_indexes`` and ``window_size``."""

    kind = "Qwen2.5-VL vision block"
    _SUBPARTS = {
        "attn": ("qkv", "proj", "num_heads", "head_dim", "scaling"),
        "mlp": ("gate_proj", "up_proj", "down_proj"),
    }

    _MARKS = ("blocks", "rotary_pos_emb", "fullatt_block_indexes", "window_size")

    def locate(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module]] | None:
        if not all(hasattr(model, mark) for mark in self._MARKS):
            return None
        return model, list(model.blocks)

    def parse(self, args: tuple, kwargs: dict) -> LayerCall:
        hidden = args[0] if args else kwargs["hidden_states"]
        cu_seqlens = args[1] if len(args) > 1 else kwargs["cu_seqlens"]
        rope = args[2] if len(args) > 2 else kwargs.get("position_embeddings")
        bounds, tokens = self._memo.get((cu_seqlens,), cu_seqlens.tolist), hidden.shape[0]
        if rope is None or rope[0].shape[0] != tokens or bounds[0] != 0 or bounds[-1] != tokens:
            return LayerCall(None, slice(bounds[-2], bounds[-1]))
        cos, sin = rope
        starts = self._memo.get(rope, lambda: _patch_starts(cos, sin))
        lengths = {end - start for start, end in zip(starts, starts[1:] + [tokens], strict=True)}
        frames = hidden.view(len(starts), lengths.pop(), hidden.shape[-1]) if len(lengths) == 1 else None
        # cos alone identifies each token's (h, w) (as for Qwen2-VL): the positions a reference is valid for.
        return LayerCall(frames, slice(starts[-1], tokens), cos, context=(cos, sin, bounds, cu_seqlens))

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        idx: torch.Tensor,
        call: LayerCall,
        scale: float,
    ) -> torch.Tensor:
        """The selected queries ``[F, n, H, D]`` (rows ``idx [F, n]``) attend within their attention
        segment of ``call.context[2]`` (``cu_seqlens`` on the host; ``[3]``, the same on the device) over
        ``key``/``value [F, T, H, D]`` -> ``[F, n, H, D]``."""
        frames, tokens, heads, dim = key.shape
        bounds = call.context[2]
        if bounds == list(range(0, frames * tokens + 1, tokens)):  # a full-attention block
            return super().attend(query, key, value, idx, call, scale)
        device = key.device
        sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
        windows, longest = len(sizes), max(sizes)
        cu = call.context[3].long()  # the block's own (a copy from the host would wait for the device)
        lengths = cu.diff()
        # [N]; the sizes are known here, so nothing below waits for the device (as bincount or max would)
        window_of = torch.repeat_interleave(
            torch.arange(windows, device=device), lengths, output_size=frames * tokens
        )
        slot_of = torch.arange(frames * tokens, device=device) - cu[:-1][window_of]  # place in its window

        def by_window(t: torch.Tensor, window: torch.Tensor, slot: torch.Tensor, length: int) -> torch.Tensor:
            padded = t.new_zeros(windows, length, heads, dim)
            padded[window, slot] = t.reshape(-1, heads, dim)
            return padded

        rows = (torch.arange(frames, device=device).unsqueeze(1) * tokens + idx).flatten()  # packed rows
        q_window = window_of[rows]
        counts = torch.zeros(windows, dtype=torch.long, device=device).index_add_(
            0, q_window, torch.ones_like(q_window)
        )
        order = torch.argsort(q_window, stable=True)
        q_slot = torch.empty_like(order)  # the query's place among its window's selected rows
        q_slot[order] = torch.arange(len(order), device=device) - (counts.cumsum(0) - counts)[q_window[order]]
        selected_most = min(longest, idx.shape[1])  # a window's selected rows, at most
        query_w = by_window(query, q_window, q_slot, selected_most)
        key_w, value_w = (by_window(t, window_of, slot_of, longest) for t in (key, value))
        mask = None  # windows of one length: no padded keys
        if min(sizes) != longest:
            mask = (torch.arange(longest, device=device) < lengths.unsqueeze(1))[:, None, None, :]
        query_w, key_w, value_w = (t.transpose(1, 2) for t in (query_w, key_w, value_w))  # [W, H, L, D]
        out = F.scaled_dot_product_attention(query_w, key_w, value_w, attn_mask=mask, scale=scale)
        return out.transpose(1, 2)[q_window, q_slot].view(frames, -1, heads, dim)


def _patch_starts(cos: torch.Tensor, sin: torch.Tensor) -> list[int]:
    """Where each temporal patch starts: wherever the rotary cos|sin row of the first token recurs."""
    return ((cos == cos[:1]).all(-1) & (sin == sin[:1]).all(-1)).nonzero().flatten().tolist()
