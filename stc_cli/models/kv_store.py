"""ReKV's evicted KV blocks of one layer, in a slab of fixed-size pages that a new video reuses.

A page holds ``page_blocks`` blocks as one tensor ``[2 (K, V), page_blocks, Hkv, block, D]`` on the
store's device (the host by default), so that a block's K, and a run of consecutive blocks' K, are
contiguous: one copy each way. Growing adds a page and never moves what is stored. A page is pinned
when it lives on the CPU and the blocks come from a GPU (never on a CPU-only machine); the copies in
are then non-blocking, ordered on the stream before any later work, including the copies out, so the
host waits on neither. Reading a page from the host (``store[i]``) is only safe once those are done.

Pages are sized in bytes, ``PAGE_BYTES`` (a power of two) or just under it, because CUDA's caching host
allocator rounds every pinned allocation up to a power of two and keeps it. ``clear`` (a new video)
keeps the pages and writes over them; they go only if the block shape, dtype or pinning changes.

A block may hold fewer tokens than its slot (``block``, the first block's length unless given): a
method that keeps a variable number of tokens per frame (``--compress dtd``) fills the head of the slot,
and reads give back only the tokens stored.

With ``max_blocks`` the store keeps only the last ``max_blocks`` blocks (``--max-blocks``, for streams of
hours): its slots form a ring over as many pages as that takes, the newest block overwriting the oldest.
Indices always count the blocks held, oldest first.
"""

from __future__ import annotations

import math

import torch

PAGE_BYTES = 1 << 24  # 16 MiB: 41 blocks of LLaVA-OV-7B's 196 tokens, 136 of STC's 60


class BlockStore:
    """Blocks ``[Hkv, n, D]`` of K and V (``n <= block``), appended one at a time, gathered onto a
    device by index."""

    def __init__(
        self,
        device="cpu",
        *,
        block: int | None = None,  # tokens per slot; None: the first block's length
        page_blocks: int | None = None,
        page_bytes: int = PAGE_BYTES,
        max_blocks: int | None = None,  # keep only the newest this many; None: every block
    ):
        if max_blocks is not None and max_blocks < 1:
            raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")
        self.device = torch.device(device)
        self.block, self.fixed_page_blocks, self.page_bytes = block, page_blocks, page_bytes
        self.max_blocks = max_blocks
        self.page_blocks: int | None = None  # blocks per page, set with the first block's size
        self.pages: list[torch.Tensor] = []
        self.spec = None  # (slot shape, dtype, pinned) of the pages
        self.lengths: list[int] = []  # tokens of each block held, oldest first
        self.dropped = 0  # blocks of this video dropped for max_blocks (the oldest)

    @property
    def count(self) -> int:
        """Blocks held for this video."""
        return len(self.lengths)

    def slot(self, index: int) -> int:
        """The slot (page * page_blocks + slot) of held block ``index`` (0: the oldest)."""
        if self.max_blocks is None:
            return index
        ring = -(-self.max_blocks // self.page_blocks) * self.page_blocks  # whole pages
        return (self.dropped + index) % ring

    @torch.no_grad()  # a page is never part of a graph
    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Copy one block's ``k`` and ``v`` (``[Hkv, n, D]``, any strides) into the next slot."""
        heads, length, dim = k.shape
        slot_shape = (heads, self.block or length, dim)
        spec = (slot_shape, k.dtype, self.device.type == "cpu" and k.is_cuda)
        if spec != self.spec and self.count:
            raise ValueError(f"a block of {spec[:2]} does not fit a store of {self.spec[:2]}")
        if spec != self.spec:
            block_bytes = 2 * math.prod(slot_shape) * k.element_size()
            self.page_blocks = self.fixed_page_blocks or max(1, self.page_bytes // block_bytes)
            self.pages, self.spec = [], spec
        if not 1 <= length <= slot_shape[1]:
            raise ValueError(f"a block of {length} tokens does not fit slots of {slot_shape[1]}")
        if self.count == self.max_blocks:  # the oldest goes; its slot is the ring's next
            del self.lengths[0]  # at most max_blocks long: cheap beside the block's copy
            self.dropped += 1
        page, slot = divmod(self.slot(self.count), self.page_blocks)
        if page == len(self.pages):
            with torch.inference_mode(False):  # a normal tensor: writable in and outside inference mode
                shape, pin = (2, self.page_blocks, *slot_shape), spec[2]
                self.pages.append(torch.empty(shape, dtype=k.dtype, device=self.device, pin_memory=pin))
        self.pages[page][0, slot, :, :length].copy_(k, non_blocking=True)
        self.pages[page][1, slot, :, :length].copy_(v, non_blocking=True)
        self.lengths.append(length)

    def gather(self, indices: list[int], device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The blocks ``indices`` (in that order) joined along the tokens, K and V ``[Hkv, tokens, D]``
        on ``device``; None for no index. Each run of consecutive blocks within a page is one copy of K
        and one of V into a staging buffer, non-blocking; then one reshape on ``device`` (one join of
        the stored tokens where some blocks are shorter than their slot)."""
        if not indices:
            return None
        (heads, block, dim), dtype, _ = self.spec
        staged = torch.empty((2, len(indices), heads, block, dim), dtype=dtype, device=device)
        for position, page, slot, n in self.runs(indices):
            for kv in (0, 1):  # separately: a slice across K and V would not be contiguous
                staged[kv, position : position + n].copy_(
                    self.pages[page][kv, slot : slot + n], non_blocking=True
                )
        lengths = [self.lengths[i] for i in indices]
        if all(length == block for length in lengths):
            joined = staged.transpose(1, 2).reshape(2, heads, len(indices) * block, dim)
        else:
            joined = torch.cat([staged[:, i, :, :n] for i, n in enumerate(lengths)], dim=2)
        return joined[0], joined[1]

    def runs(self, indices: list[int]) -> list[tuple[int, int, int, int]]:
        """``indices`` as runs of consecutive blocks within a page, one copy each way:
        ``(position in indices, page, first slot, blocks)``."""
        runs: list[list[int]] = []
        for position, index in enumerate(indices):
            page, slot = divmod(self.slot(self._check(index)), self.page_blocks)
            if runs and runs[-1][1] == page and runs[-1][2] + runs[-1][3] == slot:
                runs[-1][3] += 1
            else:
                runs.append([position, page, slot, 1])
        return [tuple(run) for run in runs]

    def clear(self) -> None:
        """Forget the blocks; the pages stay for the next video."""
        self.lengths.clear()
        self.dropped = 0

    def nbytes(self) -> int:
        """Bytes of the blocks stored (what the video holds, whatever the page size or earlier videos)."""
        if not self.count:
            return 0
        heads, block, dim = self.spec[0]
        return 2 * sum(self.lengths) * heads * dim * self.pages[0].element_size()

    def capacity_nbytes(self) -> int:
        """Bytes of the pages allocated (before the host allocator's rounding up to a power of two)."""
        return sum(page.nbytes for page in self.pages)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index`` (negative counts from the end) as views ``(k, v)`` into its page."""
        index = self._check(index)
        page, slot = divmod(self.slot(index), self.page_blocks)
        length = self.lengths[index]
        return self.pages[page][0, slot, :, :length], self.pages[page][1, slot, :, :length]

    def __iter__(self):
        return (self[i] for i in range(self.count))

    def _check(self, index: int) -> int:
        """``index`` in ``0..count - 1``, counting a negative one from the end."""
        if not -self.count <= index < self.count:
            raise IndexError(f"block {index} of {self.count}")
        return index % self.count
