"""A transformers decoder over a KV cache in fixed buffers, each step of one token count replayable from
a CUDA graph.

A ``DynamicCache`` grows by concatenation, so every step reads new addresses, and transformers builds its
causal mask with a host-side check of the positions: neither can be recorded in a CUDA graph, and on a
GPU a 7B prefill of 60 tokens then waits for launches as long as one of 196 (``docs/benchmarks.md``).
Here the cache is transformers' ``StaticCache`` of ``capacity`` tokens and the mask is built on the
device from the step's positions; slots past a query are masked out, so the output is the growing
cache's (only the order in which the keys are summed may differ).
"""

from __future__ import annotations

import torch

from stc_cli.accel.graphs import GraphReplay


class StaticStream:
    """``stream(embeds [1, L, width])`` appends the tokens to the KV cache of ``llm`` (a ``Qwen2Model``)
    and returns their last hidden states ``[1, L, width]``; with ``replay``, each token count is recorded
    in a CUDA graph on a GPU after one eager call, and replayed from then on (eager elsewhere).

    Example:
        >>> stream = StaticStream(llm, capacity=2048, replay=GraphReplay())
        >>> stream(frame_tokens)  # [1, 196, 3584]: eager, then recorded, then replayed
    """

    def __init__(self, llm, capacity: int, replay: GraphReplay | None = None) -> None:
        from transformers import StaticCache

        self.llm, self.capacity, self.replay = llm, capacity, replay
        self.cache = StaticCache(config=llm.config, max_cache_len=capacity)
        self.slots = torch.arange(capacity, device=llm.device)
        self.length = 0  # tokens held

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        tokens = embeds.shape[1]
        if self.length + tokens > self.capacity:
            raise ValueError(f"{self.length + tokens} tokens do not fit a static KV cache of {self.capacity}")
        positions = torch.arange(self.length, self.length + tokens, device=embeds.device)
        self.length += tokens
        if self.replay is None:
            return self._step(embeds, positions)[0]
        return self.replay(("static stream", tokens, embeds.dtype), self._step, embeds, positions)[0]

    def _step(self, embeds: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor]:
        mask = (self.slots[None, :] <= positions[:, None])[None, None]  # [1, 1, L, capacity]: causal
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=mask,  # 4-D: transformers takes it as it is, with no host-side check
            position_ids=positions[None],
            cache=self.cache,
            use_cache=True,
        )
        return (out.last_hidden_state,)
