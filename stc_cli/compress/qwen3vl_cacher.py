"""STC-Cacher on the Qwen3-VL vision tower (``Qwen3VLVisionModel``, transformers 5.x).

Its blocks are Qwen2-VL's (``qwen2vl_cacher.py``: LayerNorm, fused ``qkv`` with bias, 2-D vision RoPE
inside attention, packed ``[N, C]`` input, full attention within each ``cu_seqlens`` segment, one per
temporal patch), with the MLP named ``linear_fc1``/``linear_fc2``; the selective block is Qwen2-VL's. The
cacher's frame is a temporal patch (two video frames, ``gh * gw`` tokens, one segment), the reference
the chunk's last one, valid only for frames on its grid (equal rotary positions).

What is new is outside the blocks:
- A learned position embedding, bilinearly resampled to the grid, is added before the first block: it
  is part of the block input that the cacher sees, nothing to do.
- Deepstack: after each block in ``deepstack_visual_indexes`` the tower feeds that block's output to a
  patch merger of its own (``deepstack_merger_list``) and returns the results as ``deepstack_features``,
  which the LLM adds to its first layers' hidden states. The cacher replaces only the blocks' forward, so
  each deepstack merger reads exactly the hidden states the (possibly selective) block returned, the same
  ones the next block gets: the features are consistent with the cached layers by construction, stock
  where the block ran stock, and the tower's own code computes them.
"""

from __future__ import annotations

from torch import nn

from stc_cli.compress.qwen2vl_cacher import Qwen2VLBlocks


class Qwen3VLBlocks(Qwen2VLBlocks):
    """``Qwen3VLVisionBlock``s: LayerNorm ``norm1``/``norm2``, ``attn.qkv`` (fused) and ``attn.proj``, MLP
    ``linear_fc1``/``act_fn``/``linear_fc2``, called as ``block(hidden [N, C], cu_seqlens, max_seqlen,
    position_embeddings=(cos, sin))``. Each call of the tower is one chunk. A tower is this family's when
    it has ``deepstack_merger_list``."""

    kind = "Qwen3-VL vision block"
    _SUBPARTS = {
        "attn": ("qkv", "proj", "num_heads", "head_dim", "scaling"),
        "mlp": ("linear_fc1", "linear_fc2"),
    }

    def locate(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module]] | None:
        if not all(hasattr(model, a) for a in ("blocks", "rotary_pos_emb", "deepstack_merger_list")):
            return None
        return model, list(model.blocks)
