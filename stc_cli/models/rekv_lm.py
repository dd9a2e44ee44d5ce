"""A Qwen2 decoder stack whose attention is ReKV's memory (``rekv_memory.py``), one per layer.

The decoder layers are called here piece by piece (the stock norms, projections and MLP), so that
ReKV owns the attention without patching transformers or depending on its attention signature.
"""

from __future__ import annotations

import torch

from stc_cli.accel.graphs import GraphReplay
from stc_cli.models.rekv_memory import LayerMemory
from stc_cli.models.rope import RopeTable


class ReKVLanguageModel:
    """``lm`` is a ``Qwen2Model``; ``lm_head`` (for ``extend``'s logits) may be None when only encoding."""

    def __init__(
        self,
        lm,
        lm_head=None,
        *,
        n_local: int,
        block: int,
        topk: int,
        recent=False,
        source: str = "the LLM",
        cuda_graphs: bool = False,
        max_blocks: int | None = None,  # blocks kept for retrieval per layer, the newest; None: all
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
        # cuda_graphs: the windows and answer caches in fixed buffers (RingWindow, AnswerBuffer), so that
        # encoding a chunk of one shape and each generated token replay from CUDA graphs on a GPU (they
        # run eagerly elsewhere)
        scale = self.head_dim**-0.5
        rope = RopeTable(self.theta)  # the same angles in every layer: computed once
        self.memory = [
            LayerMemory(
                n_local=n_local,
                block=block,
                theta=self.theta,
                scale=scale,
                static=cuda_graphs,
                max_blocks=max_blocks,
                rope=rope,
            )
            for _ in self.lm.layers
        ]
        self.graphs = GraphReplay() if cuda_graphs else None

    def reset(self) -> None:
        """Forget everything; the next ``encode`` is the init prompt (the attention sink). The layers'
        block stores keep their host pages for the next video."""
        for memory in self.memory:
            memory.reset()

    def encode(self, embeds: torch.Tensor, sizes: list[int] | None = None) -> None:
        """Append ``embeds [1, L, width]`` to the video memory (after the init prompt: whole blocks, of
        ``block`` tokens or of ``sizes``)."""
        if self.memory[0].init_k is None:  # the init prompt: attended, kept whole, no block
            self._attend_blocks(embeds, None)
            return
        sizes = tuple(sizes or [self.block] * (embeds.shape[1] // self.block))
        if self.graphs is None or any(size != self.block for size in sizes):  # one shape per graph
            kv = self._attend_blocks(embeds, sizes)
        else:  # every call of one shape launches the same kernels on the same ring buffers
            key = (embeds.shape, embeds.dtype, sizes, tuple(m.ring.buffers for m in self.memory))
            restore = self._advance(embeds.shape[1])
            kv = self.graphs(key, lambda x: self._attend_blocks(x, sizes), embeds, restore=restore)
        heads = self.heads
        for memory, (k, v) in zip(self.memory, kv, strict=True):
            memory.store_blocks(k, v, list(sizes), heads)

    def retrieve(self, embeds: torch.Tensor, room: int = 0) -> None:
        """Let a question pick each layer's ``topk`` frames; starts the answer cache, with ``room`` for
        the tokens it will be extended by (prompt and answer: what the fixed buffers of ``cuda_graphs``
        are sized by)."""
        self._run(embeds, lambda memory, q, k, v: memory.retrieve(q, k, v, self.topk, self.recent, room))

    def extend(self, embeds: torch.Tensor) -> torch.Tensor:
        """Run prompt or generated tokens on the answer cache; the last position's logits (fp32)."""
        answer = self.memory[0].answer_buffer
        if self.graphs is None or embeds.shape[1] != 1 or answer.length + 1 > answer.size:
            return self._logits(embeds)
        # one generated token: the same kernels on the same answer buffers at every step

        def restore(_state) -> None:
            for memory in self.memory:
                memory.answer_replayed(1)

        key = ("decode", embeds.dtype, answer.size, id(answer.k))
        return self.graphs(key, self._logits, embeds, restore=restore)

    def _logits(self, embeds: torch.Tensor) -> torch.Tensor:
        hidden = self._run(embeds, "extend")
        return self.lm_head(self.lm.norm(hidden[0, -1])).float()

    def end_answer(self) -> None:
        for memory in self.memory:
            memory.end_answer()

    def nbytes(self) -> int:
        return sum(memory.nbytes() for memory in self.memory)

    def _advance(self, tokens: int):
        """What a replayed encoding step leaves undone: the layers' stream lengths, kept in Python."""

        def restore(_state) -> None:
            for memory in self.memory:
                memory.length += tokens

        return restore

    def _attend_blocks(self, embeds: torch.Tensor, sizes) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The decoder over a chunk, each layer's attention through its memory's window; the blocks are
        not stored yet. Returns each layer's K and V ``[Hkv, L, D]``."""
        kv = []

        def attend(memory: LayerMemory, q, k, v) -> torch.Tensor:
            kv.append((k, v))
            return memory.attend_blocks(q, k, v, None if sizes is None else list(sizes))

        self._run(embeds, attend)
        return tuple(kv)

    def _run(self, hidden: torch.Tensor, phase) -> torch.Tensor:
        """The decoder layers over ``hidden [1, L, width]``; ``phase(memory, q, k, v)`` is the attention."""
        if phase == "extend":
            phase = LayerMemory.extend
        length = hidden.shape[1]
        for layer, memory in zip(self.lm.layers, self.memory, strict=True):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)[0]
            q = attention.q_proj(x).view(length, self.heads, self.head_dim).transpose(0, 1)
            k = attention.k_proj(x).view(length, self.kv_heads, self.head_dim).transpose(0, 1)
            v = attention.v_proj(x).view(length, self.kv_heads, self.head_dim).transpose(0, 1)
            out = phase(memory, q, k, v)
            hidden = hidden + attention.o_proj(out.transpose(0, 1).reshape(1, length, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden
