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
from stc_cli.models.rope import RopeTable


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
        static: bool = False,  # the window in a fixed ring of buffers (``RingWindow``), for CUDA graphs
        max_blocks: int | None = None,  # blocks kept for retrieval, the newest; None: every one
        rope: RopeTable | None = None,  # shared by a model's layers; None: a table of its own
    ):
        if n_local < 1 or block < 1:
            raise ValueError(f"n_local and block must be >= 1, got {n_local} and {block}")
        self.n_local, self.block, self.scale = n_local, block, scale
        self.rope = rope or RopeTable(theta)  # RoPE's base lives there
        self.offload = torch.device(offload)
        # one (k, v) per frame
        self.blocks = BlockStore(self.offload, block=block, page_blocks=page_blocks, max_blocks=max_blocks)
        self._reprs: torch.Tensor | None = None  # [capacity, H * D]: room for block_repr to grow into
        self.ring = RingWindow(n_local + block) if static else None
        self.answer_buffer = AnswerBuffer() if static else None
        self.reset()

    def reset(self) -> None:
        """Forget the video; the block store keeps its pages (and the ring its buffers) for the next one."""
        self.init_k = self.init_v = None  # [Hkv, n_init, D]
        self.local_k = self.local_v = None  # the last <= n_local tokens of the stream
        self.blocks.clear()  # block_repr empties with it; its buffer stays for the next video
        self.length = 0  # tokens in the stream, init included
        self.answer_k = self.answer_v = None  # the answer cache: [init ; chosen blocks ; prompt ...]
        if self.ring:
            self.ring.reset()

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
            return self.attend_blocks(q, k, v)
        out = self.attend_blocks(q, k, v, sizes)
        self.store_blocks(k, v, sizes, heads=q.shape[0])
        return out

    def attend_blocks(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sizes: list[int] | None = None
    ) -> torch.Tensor:
        """``encode`` without storing the blocks for retrieval (``store_blocks`` does that): the window
        and the stream grow, the attention output is returned. On a static window this launches the same
        kernels on the same buffers for every chunk of one shape, so that a CUDA graph can replay it."""
        if self.init_k is None:  # the init prompt, whole
            self.init_k, self.init_v = (k, v) if self.ring is None else self.ring.keep_init(k, v)
            return self._encode_span(q, k, v)
        outputs, start = [], 0
        for size in self._sizes(k, sizes):
            span = slice(start, start + size)
            outputs.append(self._encode_span(q[:, span], k[:, span], v[:, span]))
            start += size
        return torch.cat(outputs, dim=1)

    def store_blocks(self, k: torch.Tensor, v: torch.Tensor, sizes: list[int] | None, heads: int) -> None:
        """Keep each block of a chunk that ``attend_blocks`` attended, for retrieval."""
        start = 0
        for size in self._sizes(k, sizes):
            self._store_block(k[:, start : start + size], v[:, start : start + size], heads)
            start += size

    def _sizes(self, k: torch.Tensor, sizes: list[int] | None) -> list[int]:
        if sizes is None:
            if k.shape[1] % self.block:
                raise ValueError(
                    f"video chunks must hold whole blocks of {self.block} tokens, got {k.shape[1]}"
                )
            return [self.block] * (k.shape[1] // self.block)
        if sum(sizes) != k.shape[1] or not all(1 <= size <= self.block for size in sizes):
            raise ValueError(f"blocks of {sizes} tokens (at most {self.block} each) for {k.shape[1]} tokens")
        return sizes

    def _encode_span(self, q, k, v) -> torch.Tensor:
        first = self.length  # stream index of the span's first token
        self.length += q.shape[1]
        if self.ring is not None:
            query_at, key_at = self.ring.append(k, v)
            # the eager window's first key: the span's first token, less the n_local tokens before it
            window_start = (query_at[0] - self.n_local).clamp(min=0)
            return self._attend_at(q, self.ring.k, self.ring.v, query_at, key_at, window_start, joint=True)
        if self.local_k is None:
            keys, values = k, v
        else:
            keys, values = torch.cat((self.local_k, k), dim=1), torch.cat((self.local_v, v), dim=1)
        out = self._window_attend(q, keys, values, first, window_start=first + k.shape[1] - keys.shape[1])
        self.local_k, self.local_v = keys[:, -self.n_local :], values[:, -self.n_local :]
        return out

    def _window_attend(self, q, keys, values, first: int, window_start: int) -> torch.Tensor:
        """Queries at stream indices ``first...`` over the keys at ``window_start...``."""
        span, device = q.shape[1], q.device
        query_at = torch.arange(first, first + span, device=device)
        key_at = torch.arange(window_start, window_start + keys.shape[1], device=device)
        joint = first + span - 1 >= self.n_local  # some query has an init token outside its window
        return self._attend_at(q, keys, values, query_at, key_at, window_start, joint)

    def _attend_at(self, q, keys, values, query_at, key_at, window_start, joint: bool) -> torch.Tensor:
        """Queries at stream indices ``query_at [L]`` see the keys at ``key_at`` that lie within ``n_local``
        of them, at RoPE positions relative to ``window_start``, and (``joint``) the init tokens outside
        that window at one fixed angle (query at ``n_local - 1``, keys un-rotated), in one softmax."""
        distance = query_at[:, None] - key_at[None, :]
        in_window = (distance >= 0) & (distance < self.n_local)
        # every position lies below the keys' count; masked keys (stale ring slots) are clamped into it
        bound = keys.shape[1]
        q_local = self.rope.rotate(q, query_at - window_start, bound)
        k_local = self.rope.rotate(keys, key_at - window_start, bound)
        if not joint:
            return attend(q_local, k_local, values, in_window, self.scale)
        init_at = torch.arange(self.init_k.shape[1], device=q.device)
        outside = init_at[None, :] <= query_at[:, None] - self.n_local
        q_init = self.rope.rotate(q, torch.full_like(query_at, self.n_local - 1), bound)
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
        """``[n_blocks, H * D]``: each block held's representative key, oldest first; None before the first
        block. With ``max_blocks`` the rows form a ring like the store's slots."""
        count = len(self.blocks)
        if not count:
            return None
        if not self.blocks.dropped:
            return self._reprs[:count]
        rows = (self.blocks.dropped + torch.arange(count, device=self._reprs.device)) % len(self._reprs)
        return self._reprs[rows]

    def _store_block(self, k: torch.Tensor, v: torch.Tensor, heads: int) -> None:
        expanded = k.repeat_interleave(heads // k.shape[0], dim=0)  # [H, block, D], GQA-expanded
        representative = expanded.mean(dim=1).reshape(-1)  # [H * D]
        count, reprs, cap = len(self.blocks), self._reprs, self.blocks.max_blocks
        fits = reprs is not None and (reprs.shape[1:], reprs.dtype, reprs.device) == (
            representative.shape,
            representative.dtype,
            representative.device,
        )
        if not fits or (count == len(reprs) and count != cap):
            # doubling: appending stays O(1) amortised (a cat per frame copies the whole history)
            rows = max(64, 2 * count) if cap is None else min(cap, max(64, 2 * count))
            with torch.inference_mode(False):  # a normal tensor: writable in and outside inference mode
                grown = representative.new_empty((rows, representative.numel()))
            if count:
                grown[:count] = reprs[:count]  # nothing dropped yet while the buffer grows
            self._reprs = grown
        # the next row; once max_blocks are held, the oldest block's, which the store drops too
        self._reprs[(self.blocks.dropped + count) % len(self._reprs)] = representative
        self.blocks.append(k, v)

    # -- answering -------------------------------------------------------------------------------
    def retrieve(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        topk: int,
        recent: bool = False,
        room: int = 0,
    ) -> torch.Tensor:
        """Choose this layer's ``topk`` blocks for question ``q`` (the last ``topk`` where ``recent``) and
        start the answer cache with them; ``room``: the tokens it will be extended by (a static memory
        sizes its buffers by it).

        The question attends ``[init ; chosen ; question]``; its own keys are not kept.
        """
        count = len(self.blocks)
        picked = list(range(max(count - topk, 0), count)) if recent else self.choose(q, topk)
        chosen = self.blocks.gather(picked, self.init_k.device)
        if self.answer_buffer is not None:
            self.answer_buffer.start(self.init_k, self.init_v, chosen, room + q.shape[1])
        elif chosen is None:
            self.answer_k, self.answer_v = self.init_k, self.init_v
        else:
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
        if self.answer_buffer is not None:
            buffer = self.answer_buffer
            query_at, key_at = buffer.append(k, v, keep)
            out = self._attend_at(q, buffer.k, buffer.v, query_at, key_at, 0, joint=True)
            self.answer_k, self.answer_v = buffer.held()
            return out
        keys, values = torch.cat((self.answer_k, k), dim=1), torch.cat((self.answer_v, v), dim=1)
        out = self._window_attend(q, keys, values, first=keys.shape[1] - q.shape[1], window_start=0)
        if keep:
            self.answer_k, self.answer_v = keys, values
        return out

    def answer_replayed(self, tokens: int) -> None:
        """A step that extended the static answer cache by ``tokens`` was replayed: count them here."""
        self.answer_buffer.length += tokens
        self.answer_k, self.answer_v = self.answer_buffer.held()

    def end_answer(self) -> None:
        self.answer_k = self.answer_v = None

    def nbytes(self) -> int:
        """Bytes held for this video: init, window and the blocks stored (the answer cache is transient).
        The pages reserved, used or not, are ``self.blocks.capacity_nbytes()``."""
        held = [self.init_k, self.init_v, self.local_k, self.local_v]
        reprs = len(self.blocks) * self._reprs[0].nbytes if len(self.blocks) else 0
        ring = self.ring.nbytes() if self.ring else 0
        return sum(t.nbytes for t in held if t is not None) + self.blocks.nbytes() + reprs + ring


class RingWindow:
    """The sliding window in fixed buffers: token ``i`` of the stream sits in slot ``i % size`` with its
    stream index, so that appending a span writes in place (no copy of the window) and every later span
    of one length runs the same kernels on the same buffers, which a CUDA graph can replay. ``size`` is
    ``n_local`` plus a span: the tokens a span can see, all in distinct slots. Empty or stale slots lie
    further than ``n_local`` from every query, so the window's mask leaves them out; their keys are
    rotated too, but never reach the softmax. The stream's length is kept on the device for the same
    reason. Against the growing window, only the order in which the keys are summed differs."""

    EMPTY = -(2**24)  # the stream index of an empty slot: outside every query's window

    def __init__(self, size: int) -> None:
        self.size = size
        self.k = self.v = self.key_at = self.length = None  # [Hkv, size, D] x 2, [size], 0-dim
        self.init: tuple[torch.Tensor, torch.Tensor] | None = None  # the init prompt's K and V
        self.buffers = 0  # how many times the buffers were made: a graph reads the latest ones only

    def reset(self) -> None:
        if self.k is not None:  # in place: a recorded graph keeps reading these buffers
            self.key_at.fill_(self.EMPTY)
            self.length.zero_()

    def keep_init(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The init prompt's K and V, copied into buffers of their own that the next video reuses."""
        if k.shape[1] > self.size:
            raise ValueError(f"the init prompt's {k.shape[1]} tokens do not fit a window of {self.size}")
        if self.init is None or self.init[0].shape != k.shape or self.init[0].dtype != k.dtype:
            self.init = torch.empty_like(k), torch.empty_like(v)
            self.buffers += 1
        self.init[0].copy_(k)
        self.init[1].copy_(v)
        return self.init

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write a span ``[Hkv, L, D]`` after the stream's end; returns its stream indices ``[L]`` and every
        slot's ``[size]``."""
        shape = (k.shape[0], self.size, k.shape[2])
        if self.k is None or self.k.shape != shape or self.k.dtype != k.dtype or self.k.device != k.device:
            self.k, self.v = k.new_zeros(shape), v.new_zeros(shape)
            self.key_at = torch.full((self.size,), self.EMPTY, device=k.device)
            self.length = torch.zeros((), dtype=torch.long, device=k.device)
            self.buffers += 1
        query_at = self.length + torch.arange(k.shape[1], device=k.device)
        slots = query_at % self.size
        self.k.index_copy_(1, slots, k)
        self.v.index_copy_(1, slots, v)
        self.key_at.index_copy_(0, slots, query_at)
        self.length += k.shape[1]
        return query_at, self.key_at

    def nbytes(self) -> int:
        """The window's buffers (the init prompt's are counted as the layer's ``init_k``/``init_v``)."""
        return sum(t.nbytes for t in (self.k, self.v) if t is not None)


class AnswerBuffer:
    """The answer cache ``[init ; chosen blocks ; prompt ; generated]`` in fixed buffers: a token at
    position ``i`` sits in slot ``i``, so a generated token is written in place and every decoding step
    runs the same kernels on the same buffers (a CUDA graph replays it). Slots past the query are left
    out by the causal mask. The buffers are sized in steps of ``STEP`` slots and kept per size, so that
    a graph recorded on one size stays valid for every later answer of that size."""

    STEP = 1024

    def __init__(self) -> None:
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.k = self.v = self.key_at = None  # [Hkv, size, D] x 2, [size]: the buffers in use
        self.length_t: torch.Tensor | None = None  # tokens kept, on the device (for the graphs)
        self.length = 0  # the same, in Python

    @property
    def size(self) -> int:
        return self.key_at.shape[0]

    def start(self, init_k, init_v, chosen: tuple[torch.Tensor, torch.Tensor] | None, room: int) -> None:
        """Hold ``init`` and the ``chosen`` blocks, with room for ``room`` more tokens."""
        parts = [(init_k, init_v)] + ([chosen] if chosen is not None else [])
        held = sum(k.shape[1] for k, _ in parts)
        size = -(-(held + room) // self.STEP) * self.STEP
        key = (size, init_k.shape[0], init_k.shape[2], init_k.dtype, init_k.device)
        if key not in self._buffers:
            shape = (init_k.shape[0], size, init_k.shape[2])
            positions = torch.arange(size, device=init_k.device)
            self._buffers[key] = (init_k.new_zeros(shape), init_v.new_zeros(shape), positions)
        self.k, self.v, self.key_at = self._buffers[key]
        start = 0
        for k, v in parts:
            self.k[:, start : start + k.shape[1]].copy_(k)
            self.v[:, start : start + v.shape[1]].copy_(v)
            start += k.shape[1]
        self.length = held
        if self.length_t is None or self.length_t.device != init_k.device:
            self.length_t = torch.zeros((), dtype=torch.long, device=init_k.device)
        self.length_t.fill_(held)

    def append(self, k: torch.Tensor, v: torch.Tensor, keep: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v [Hkv, L, D]`` after the tokens kept (kept there only if ``keep``); returns their
        positions ``[L]`` and every slot's ``[size]``."""
        if self.length + k.shape[1] > self.size:
            raise ValueError(f"the answer outgrew its {self.size} slots: give retrieve() more room")
        query_at = self.length_t + torch.arange(k.shape[1], device=k.device)
        self.k.index_copy_(1, query_at, k)
        self.v.index_copy_(1, query_at, v)
        if keep:
            self.length_t += k.shape[1]
            self.length += k.shape[1]
        return query_at, self.key_at

    def held(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the tokens kept ``[Hkv, length, D]``."""
        return self.k[:, : self.length], self.v[:, : self.length]
