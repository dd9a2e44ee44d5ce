"""A Qwen2 decoder stack whose attention is ReKV's memory (``rekv_memory.py``), one per layer.

The decoder layers are called here piece by piece (the stock norms, projections and MLP), so that
ReKV owns the attention without patching transformers or depending on its attention signature.
"""

from __future__ import annotations

import torch

from stc_cli.models.rekv_memory import LayerMemory


class ReKVLanguageModel:
    """``lm`` is a ``Qwen2Model``; ``lm_head`` (for ``extend``'s logits) may be None when only encoding."""

    def __init__(
        self, lm, lm_head=None, *, n_local: int, block: int, topk: int, recent=False, source: str = "the LLM"
    ):
        config = lm.config
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
            raise ValueError(f"{source}: sliding-window attention layers are not supported by ReKV")
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"{source}: RoPE type {rope['rope_type']!r} is not supported by ReKV")
        self.lm, self.lm_head, self.n_local, self.block, self.topk = lm, lm_head, n_local, block, topk
        self.recent = recent  # answer from the last ``topk`` frames instead of the most relevant
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        self.memory = [
            LayerMemory(n_local=self.n_local, block=self.block, theta=self.theta, scale=self.head_dim**-0.5)
            for _ in self.lm.layers
        ]

    def reset(self) -> None:
        """Forget everything; the next ``encode`` is the init prompt (the attention sink). The layers'
        block stores keep their host pages for the next video."""
        for memory in self.memory:
            memory.reset()

    def encode(self, embeds: torch.Tensor, sizes: list[int] | None = None) -> None:
        """Append ``embeds [1, L, width]`` to the video memory (after the init prompt: whole blocks, of
        ``block`` tokens or of ``sizes``)."""
        self._run(embeds, "encode", sizes)

    def retrieve(self, embeds: torch.Tensor) -> None:
        """Let a question pick each layer's ``topk`` frames; starts the answer cache."""
        self._run(embeds, "retrieve")

    def extend(self, embeds: torch.Tensor) -> torch.Tensor:
        """Run prompt or generated tokens on the answer cache; the last position's logits (fp32)."""
        hidden = self._run(embeds, "extend")
        return self.lm_head(self.lm.norm(hidden[0, -1])).float()

    def end_answer(self) -> None:
        for memory in self.memory:
            memory.end_answer()

    def nbytes(self) -> int:
        return sum(memory.nbytes() for memory in self.memory)

    def _run(self, hidden: torch.Tensor, phase: str, sizes: list[int] | None = None) -> torch.Tensor:
        length = hidden.shape[1]
        for layer, memory in zip(self.lm.layers, self.memory, strict=True):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)[0]
            q = attention.q_proj(x).view(length, self.heads, self.head_dim).transpose(0, 1)
            k = attention.k_proj(x).view(length, self.kv_heads, self.head_dim).transpose(0, 1)
            v = attention.v_proj(x).view(length, self.kv_heads, self.head_dim).transpose(0, 1)
            if phase == "encode":
                out = memory.encode(q, k, v, sizes)
            elif phase == "retrieve":
                out = memory.retrieve(q, k, v, self.topk, self.recent)
            else:
                out = memory.extend(q, k, v)
            hidden = hidden + attention.o_proj(out.transpose(0, 1).reshape(1, length, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden
