"""ReKV's video memory for one decoder layer: a sliding-window KV store with per-frame blocks that the
question retrieves (``../shared/docs/upstream-models.md`` section 5, in this project's own formulation).

Keys and values are kept *before* RoPE, so that a key can be attended at whatever position the phase
gives it: while encoding, a token sees the last ``n_local`` tokens of the stream at their relative
positions, plus the init prompt (the first ``n_init`` tokens, the attention sink) at one fixed angle
once it has slid out of the window, in one joint softmax. Every token after the init prompt also lands
in a block of ``block`` tokens (one frame; fewer where a method keeps a variable number) with a
representative key (the mean of its GQA-expanded pre-RoPE keys); blocks live on ``offload`` (the CPU
by default), in a ``BlockStore`` (``kv_store.py``): pinned pages when the model runs on a GPU, which
the next video reuses after ``reset``.

Answering: each layer scores the blocks against the question's mean query (a raw dot product, as
upstream does, though it is called a cosine there), keeps the ``topk`` best in temporal order, and then
attends ``[init ; chosen blocks ; prompt ; generated tokens]`` at contiguous positions (with the same
window rule, should that exceed ``n_local``). That answer cache is separate from the video memory,
which answering leaves untouched.

One deliberate simplification: an init token is attended in the window while it is inside the query's
window, and through the init stage once it is outside, never both. Upstream also moves init tokens out
gradually and may attend one twice for the one or two sub-chunks around the moment the stream first
outgrows the window.

Shapes (batch 1, dropped): ``q`` is ``[H, L, D]``, ``k`` and ``v`` are ``[Hkv, L, D]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stc_cli.models.kv_store import BlockStore


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE (rotate-half convention, as Qwen2) of ``x [*, L, D]`` at integer ``positions [L]``, in fp32."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = positions.to(device=x.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    x32 = x.float()
    half = dim // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * angles.cos() + rotated * angles.sin()).to(x.dtype)


def attend(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor, scale: float
) -> torch.Tensor:
    """Softmax attention of ``q [H, Lq, D]`` over ``keys [Hkv, Lk, D]`` and ``values [Hkv, Lk, Dv]``
    (grouped-query: head h reads kv head ``h // (H / Hkv)``, as Qwen2) where ``allowed [Lq, Lk]``. Every
    query must see at least one key. Returns ``[H, Lq, Dv]``.

    The query heads of a group are folded into the length, so that SDPA gets 4-D tensors with one K/V
    per group: on CUDA a fused kernel runs (scaled before the product, accumulated in float32) instead
    of the math path, which repeats K/V for the grouped heads."""
    heads, length, dim = q.shape
    kv_heads = keys.shape[0]
    groups = heads // kv_heads
    folded = q.reshape(kv_heads, groups * length, dim)
    mask = allowed.repeat(groups, 1) if groups > 1 else allowed
    out = F.scaled_dot_product_attention(folded[None], keys[None], values[None], attn_mask=mask, scale=scale)
    return out[0].reshape(heads, length, values.shape[-1])


class LayerMemory:
    """The KV memory of one decoder layer for one video (see the module docstring)."""

    def __init__(
        self,
        *,
        n_local: int,
        block: int,
        theta: float,
        scale: float,
        offload="cpu",
        page_blocks: int | None = None,  # blocks per page of the store; None: as many as fit PAGE_BYTES
    ):
        if n_local < 1 or block < 1:
            raise ValueError(f"n_local and block must be >= 1, got {n_local} and {block}")
        self.n_local, self.block, self.theta, self.scale = n_local, block, theta, scale
        self.offload = torch.device(offload)
        self.blocks = BlockStore(self.offload, block=block, page_blocks=page_blocks)  # one (k, v) per frame
        self._reprs: torch.Tensor | None = None  # [capacity, H * D]: room for block_repr to grow into
        self.reset()

    def reset(self) -> None:
        """Forget the video; the block store keeps its pages for the next one."""
        self.init_k = self.init_v = None  # [Hkv, n_init, D]
        self.local_k = self.local_v = None  # the last <= n_local tokens of the stream
        self.blocks.clear()  # block_repr empties with it; its buffer stays for the next video
        self.length = 0  # tokens in the stream, init included
        self.answer_k = self.answer_v = None  # the answer cache: [init ; chosen blocks ; prompt ...]

    # -- encoding --------------------------------------------------------------------------------
    def encode(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sizes: list[int] | None = None
    ) -> torch.Tensor:
        """Append a chunk to the stream and return its attention output ``[H, L, D]``.

        The first call is the init prompt, taken whole; every later call must bring whole blocks
        (frames), each attended as one sub-chunk, as upstream's ``exc_block_size = block`` does. Blocks
        are ``block`` tokens each, or ``sizes`` (each 1 to ``block``) where a method keeps a variable
        number of tokens per frame.
        """
        if self.init_k is None:
            self.init_k, self.init_v = k, v
            return self._encode_span(q, k, v)
        if sizes is None:
            if k.shape[1] % self.block:
                raise ValueError(
                    f"video chunks must hold whole blocks of {self.block} tokens, got {k.shape[1]}"
                )
            sizes = [self.block] * (k.shape[1] // self.block)
        elif sum(sizes) != k.shape[1] or not all(1 <= size <= self.block for size in sizes):
            raise ValueError(f"blocks of {sizes} tokens (at most {self.block} each) for {k.shape[1]} tokens")
        outputs, start = [], 0
        for size in sizes:
            span = slice(start, start + size)
            outputs.append(self._encode_span(q[:, span], k[:, span], v[:, span]))
            self._store_block(k[:, span], v[:, span], heads=q.shape[0])
            start += size
        return torch.cat(outputs, dim=1)

    def _encode_span(self, q, k, v) -> torch.Tensor:
        first = self.length  # stream index of the span's first token
        if self.local_k is None:
            keys, values = k, v
        else:
            keys, values = torch.cat((self.local_k, k), dim=1), torch.cat((self.local_v, v), dim=1)
        out = self._window_attend(q, keys, values, first, window_start=first + k.shape[1] - keys.shape[1])
        self.length += q.shape[1]
        self.local_k, self.local_v = keys[:, -self.n_local :], values[:, -self.n_local :]
        return out

    def _window_attend(self, q, keys, values, first: int, window_start: int) -> torch.Tensor:
        """Queries at stream indices ``first...`` see the keys ``window_start...`` that lie within
        ``n_local`` of them, at window-relative RoPE positions, and the init tokens outside that window
        at one fixed angle (query at ``n_local - 1``, keys un-rotated), in one softmax."""
        span, device = q.shape[1], q.device
        query_at = torch.arange(first, first + span, device=device)
        key_at = torch.arange(window_start, window_start + keys.shape[1], device=device)
        distance = query_at[:, None] - key_at[None, :]
        in_window = (distance >= 0) & (distance < self.n_local)
        q_local = rotate(q, query_at - window_start, self.theta)
        k_local = rotate(keys, key_at - window_start, self.theta)
        if first + span - 1 < self.n_local:  # no query has an init token outside its window yet
            return attend(q_local, k_local, values, in_window, self.scale)
        init_at = torch.arange(self.init_k.shape[1], device=device)
        outside = init_at[None, :] <= query_at[:, None] - self.n_local
        q_init = rotate(q, torch.full((span,), self.n_local - 1, device=device), self.theta)
        return self._joint(q_init, q_local, k_local, values, outside, in_window)

    def _joint(self, q_init, q_local, k_local, v_local, init_allowed, local_allowed) -> torch.Tensor:
        """One softmax over the init keys (seen from ``q_init``) and the window (seen from ``q_local``),
        as one SDPA call: queries ``[q_init | q_local]`` against keys ``[init_k | 0]`` and ``[0 | k_local]``
        (concatenated along the channels) give exactly the two sets of logits."""
        init_k = torch.cat((self.init_k, torch.zeros_like(self.init_k)), dim=-1)
        k_local = torch.cat((torch.zeros_like(k_local), k_local), dim=-1)
        keys, values = torch.cat((init_k, k_local), dim=1), torch.cat((self.init_v, v_local), dim=1)
        allowed = torch.cat((init_allowed, local_allowed), dim=1)
        return attend(torch.cat((q_init, q_local), dim=-1), keys, values, allowed, self.scale)

    @property
    def block_repr(self) -> torch.Tensor | None:
        """``[n_blocks, H * D]``: each block's representative key, None before the first block."""
        return self._reprs[: len(self.blocks)] if len(self.blocks) else None

    def _store_block(self, k: torch.Tensor, v: torch.Tensor, heads: int) -> None:
        expanded = k.repeat_interleave(heads // k.shape[0], dim=0)  # [H, block, D], GQA-expanded
        representative = expanded.mean(dim=1).reshape(-1)  # [H * D]
        count, reprs = len(self.blocks), self._reprs
        fits = reprs is not None and (reprs.shape[1:], reprs.dtype, reprs.device) == (
            representative.shape,
            representative.dtype,
            representative.device,
        )
        if not fits or count == len(reprs):
            # doubling: appending stays O(1) amortised (a cat per frame copies the whole history)
            with torch.inference_mode(False):  # a normal tensor: writable in and outside inference mode
                grown = representative.new_empty((max(64, 2 * count), representative.numel()))
            if count:
                grown[:count] = reprs[:count]
            self._reprs = grown
        self._reprs[count] = representative
        self.blocks.append(k, v)

    # -- answering -------------------------------------------------------------------------------
    def retrieve(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int, recent: bool = False
    ) -> torch.Tensor:
        """Choose this layer's ``topk`` blocks for question ``q`` (the last ``topk`` where ``recent``) and
        start the answer cache with them.

        The question attends ``[init ; chosen ; question]``; its own keys are not kept.
        """
        self.answer_k, self.answer_v = self.init_k, self.init_v
        count = len(self.blocks)
        picked = list(range(max(count - topk, 0), count)) if recent else self.choose(q, topk)
        chosen = self.blocks.gather(picked, self.init_k.device)
        if chosen is not None:
            self.answer_k = torch.cat((self.init_k, chosen[0]), dim=1)
            self.answer_v = torch.cat((self.init_v, chosen[1]), dim=1)
        return self._attend_answer(q, k, v, keep=False)

    def choose(self, q: torch.Tensor, topk: int) -> list[int]:
        """Indices of the ``topk`` blocks whose representative key has the largest dot product with the
        mean query, in temporal order; all blocks when there are no more than ``topk``."""
        count = len(self.blocks)
        if count <= topk:
            return list(range(count))
        query = q.float().mean(dim=1).reshape(-1)  # [H * D]
        scores = self.block_repr.float() @ query
        return sorted(scores.topk(topk).indices.tolist())

    def extend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Prompt or generated tokens: attend the answer cache, then join it."""
        return self._attend_answer(q, k, v, keep=True)

    def _attend_answer(self, q, k, v, *, keep: bool) -> torch.Tensor:
        """The answer cache sits at positions 0.. and the new tokens right after it; past ``n_local``
        tokens the same window-plus-init rule as in encoding applies."""
        keys, values = torch.cat((self.answer_k, k), dim=1), torch.cat((self.answer_v, v), dim=1)
        out = self._window_attend(q, keys, values, first=keys.shape[1] - q.shape[1], window_start=0)
        if keep:
            self.answer_k, self.answer_v = keys, values
        return out

    def end_answer(self) -> None:
        self.answer_k = self.answer_v = None

    def nbytes(self) -> int:
        """Bytes held for this video: init, window and the blocks stored (the answer cache is transient).
        The pages reserved, used or not, are ``self.blocks.capacity_nbytes()``."""
        held = [self.init_k, self.init_v, self.local_k, self.local_v, self.block_repr]
        return sum(t.nbytes for t in held if t is not None) + self.blocks.nbytes()
