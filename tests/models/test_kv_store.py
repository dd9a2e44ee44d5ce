"""ReKV's block store: pages of a fixed number of blocks, reused by the next video, read back exactly."""

import math

import pytest
import torch

from stc_cli.models.kv_store import BlockStore

KV_HEADS, BLOCK, DIM = 2, 3, 4


def blocks(n, seed=0, dtype=torch.float32):
    """``n`` (k, v) pairs ``[Hkv, block, D]``, each a strided view as the LM's projections give them."""
    generator = torch.Generator().manual_seed(seed)
    k = torch.randn(n * BLOCK, KV_HEADS, DIM, generator=generator).to(dtype).transpose(0, 1)
    v = torch.randn(n * BLOCK, KV_HEADS, DIM, generator=generator).to(dtype).transpose(0, 1)
    return [(k[:, i * BLOCK : (i + 1) * BLOCK], v[:, i * BLOCK : (i + 1) * BLOCK]) for i in range(n)]


def filled(pairs, page_blocks, store=None):
    store = BlockStore(page_blocks=page_blocks) if store is None else store
    for k, v in pairs:
        store.append(k, v)
    return store


@pytest.mark.parametrize(("n", "page_blocks"), [(1, 1), (1, 4), (4, 4), (5, 4), (9, 4), (7, 3), (6, 1)])
def test_n_blocks_take_ceil_n_over_b_pages_and_nbytes_counts_the_blocks_stored(n, page_blocks):
    store = filled(blocks(n), page_blocks)
    block_bytes = 2 * KV_HEADS * BLOCK * DIM * 4  # K and V, float32
    assert len(store) == n and len(store.pages) == math.ceil(n / page_blocks)
    assert all(page.shape == (2, page_blocks, KV_HEADS, BLOCK, DIM) for page in store.pages)
    assert store.nbytes() == n * block_bytes
    assert store.capacity_nbytes() == math.ceil(n / page_blocks) * page_blocks * block_bytes


def test_pages_are_sized_to_fit_page_bytes():
    """Blocks per page: as many as fit ``page_bytes`` (the host allocator rounds a pinned allocation up
    to a power of two), at least one."""
    block_bytes = 2 * KV_HEADS * BLOCK * DIM * 4  # 192
    store = filled(blocks(1), None, BlockStore(page_bytes=1000))
    assert store.page_blocks == 5 and store.capacity_nbytes() == 5 * block_bytes <= 1000
    assert filled(blocks(1), None, BlockStore(page_bytes=100)).page_blocks == 1


@pytest.mark.parametrize(("tokens", "page_blocks"), [(196, 41), (60, 136)])
def test_llava_ov_7b_pages_hold_just_under_16_mib(tokens, page_blocks):
    """LLaVA-OV-7B (4 KV heads of 128, float16): 196 tokens per frame without STC, 60 with it."""
    k = torch.empty(4, tokens, 128, dtype=torch.float16, device="meta")
    store = filled([(k, k)], None, BlockStore("meta"))
    assert store.page_blocks == page_blocks and store.capacity_nbytes() <= 1 << 24
    assert store.capacity_nbytes() > (1 << 24) - 2 * k.nbytes  # no room for one more block


def test_blocks_read_back_exactly_across_page_boundaries():
    pairs = blocks(7)
    store = filled(pairs, page_blocks=3)  # pages: 0 1 2 | 3 4 5 | 6
    for i, (k, v) in enumerate(pairs):
        assert torch.equal(store[i][0], k) and torch.equal(store[i][1], v)
    assert torch.equal(store[-1][0], pairs[6][0]) and [b[0].shape for b in store] == [(2, 3, 4)] * 7
    for indices in ([2, 3], [1, 2, 3, 4, 5, 6], [0, 4, 6], [5, 0, 3, 3], [6], list(range(7))):
        k, v = store.gather(indices, "cpu")
        assert torch.equal(k, torch.cat([pairs[i][0] for i in indices], dim=1))
        assert torch.equal(v, torch.cat([pairs[i][1] for i in indices], dim=1))
    assert store.gather([], "cpu") is None
    with pytest.raises(IndexError, match="block 7 of 7"):
        store.gather([1, 7], "cpu")


def test_consecutive_blocks_within_a_page_are_copied_as_one_run():
    store = filled(blocks(7), page_blocks=3)  # pages: 0 1 2 | 3 4 5 | 6
    # (position in the indices, page, first slot, blocks)
    assert store.runs([0, 1, 2, 3, 4, 6]) == [(0, 0, 0, 3), (3, 1, 0, 2), (5, 2, 0, 1)]
    assert store.runs([1, 2, 4, 5]) == [(0, 0, 1, 2), (2, 1, 1, 2)]
    assert store.runs([0, 2, 3, -1]) == [(0, 0, 0, 1), (1, 0, 2, 1), (2, 1, 0, 1), (3, 2, 0, 1)]
    assert store.runs([4, 3]) == [(0, 1, 1, 1), (1, 1, 0, 1)]


def test_a_new_video_of_the_same_length_reuses_the_pages():
    store = filled(blocks(7), page_blocks=3)
    pages = [page.data_ptr() for page in store.pages]
    store.clear()
    assert len(store) == 0 and store.nbytes() == 0 and store.capacity_nbytes() == 3 * 3 * 2 * 2 * 3 * 4 * 4
    second = blocks(7, seed=1)
    filled(second, None, store)
    assert [page.data_ptr() for page in store.pages] == pages  # written over, nothing allocated
    k, _ = store.gather([2, 3, 6], "cpu")
    assert torch.equal(k, torch.cat([second[i][0] for i in [2, 3, 6]], dim=1))
    store.clear()
    filled(blocks(10, seed=2), None, store)  # a longer video adds pages after the old ones
    assert [page.data_ptr() for page in store.pages[:3]] == pages and len(store.pages) == 4


def test_another_block_shape_or_dtype_starts_new_pages_only_between_videos():
    store = filled(blocks(2), page_blocks=3)
    with pytest.raises(ValueError, match="does not fit"):
        store.append(*blocks(1, dtype=torch.float16)[0])
    store.clear()
    halves = blocks(2, dtype=torch.float16)
    filled(halves, None, store)
    assert store.pages[0].dtype == torch.float16 and len(store.pages) == 1
    assert torch.equal(store.gather([1], "cpu")[0], halves[1][0])


def test_pages_made_in_inference_mode_take_blocks_outside_it_too():
    with torch.inference_mode():
        store = filled(blocks(1), page_blocks=3)
    store.clear()
    pairs = blocks(2, seed=1)
    filled(pairs, None, store)
    assert torch.equal(store.gather([0, 1], "cpu")[1], torch.cat([v for _, v in pairs], dim=1))


def test_on_a_cpu_the_pages_are_not_pinned():
    assert not filled(blocks(2), page_blocks=3).pages[0].is_pinned()


@pytest.mark.gpu
def test_from_a_gpu_the_pages_are_pinned_and_read_back_to_it():
    pairs = [(k.cuda(), v.cuda()) for k, v in blocks(7, dtype=torch.float16)]
    store = filled(pairs, page_blocks=3)
    assert all(page.is_pinned() and page.device.type == "cpu" for page in store.pages)
    k, v = store.gather([1, 2, 3, 6], "cuda")  # no host sync between the copies in and out
    assert k.is_cuda and torch.equal(k, torch.cat([pairs[i][0] for i in [1, 2, 3, 6]], dim=1))
    assert torch.equal(v, torch.cat([pairs[i][1] for i in [1, 2, 3, 6]], dim=1))
    on_gpu = filled(pairs, page_blocks=3, store=BlockStore("cuda", page_blocks=3))
    assert on_gpu.pages[0].is_cuda and torch.equal(on_gpu.gather([4], "cuda")[0], pairs[4][0])


def test_blocks_shorter_than_their_slot_read_back_only_the_tokens_stored():
    """``--compress dtd``: blocks of 3, 1, 2 and 3 tokens in slots of 3, two blocks per page."""
    full = blocks(4)
    lengths = [3, 1, 2, 3]
    pairs = [(k[:, :n], v[:, :n]) for (k, v), n in zip(full, lengths, strict=True)]
    store = filled(pairs, page_blocks=2, store=BlockStore(block=BLOCK, page_blocks=2))
    assert store.lengths == lengths and all(p.shape == (2, 2, KV_HEADS, BLOCK, DIM) for p in store.pages)
    for i, (k, v) in enumerate(pairs):
        assert torch.equal(store[i][0], k) and torch.equal(store[i][1], v)
    for indices in ([0, 1, 2, 3], [1, 2], [3, 1], [0, 3]):
        k, v = store.gather(indices, "cpu")
        assert torch.equal(k, torch.cat([pairs[i][0] for i in indices], dim=1))
        assert torch.equal(v, torch.cat([pairs[i][1] for i in indices], dim=1))
    assert store.nbytes() == 2 * sum(lengths) * KV_HEADS * DIM * 4
    assert store.capacity_nbytes() == 2 * 2 * 2 * KV_HEADS * BLOCK * DIM * 4
    with pytest.raises(ValueError, match="a block of 4 tokens does not fit slots of 3"):
        store.append(torch.zeros(KV_HEADS, 4, DIM), torch.zeros(KV_HEADS, 4, DIM))


@pytest.mark.parametrize(("cap", "page_blocks"), [(3, 2), (4, 2), (1, 1), (5, 3)])
def test_max_blocks_keeps_the_newest_in_a_ring_of_whole_pages(cap, page_blocks):
    """Nine blocks into a store that keeps ``cap``: the newest ``cap``, oldest first, read one by one
    and gathered (runs split where the ring wraps), on ``ceil(cap / page_blocks)`` pages, never more."""
    pairs = blocks(9)
    store = BlockStore(page_blocks=page_blocks, max_blocks=cap)
    for i, (k, v) in enumerate(pairs):
        store.append(k, v)
        assert len(store) == min(i + 1, cap) and len(store.pages) <= math.ceil(cap / page_blocks)
    kept = pairs[-cap:]
    assert store.dropped == 9 - cap and store.nbytes() == cap * 2 * KV_HEADS * BLOCK * DIM * 4
    for (k, v), (want_k, want_v) in zip(store, kept, strict=True):
        assert torch.equal(k, want_k) and torch.equal(v, want_v)
    indices = list(range(cap))[::-1] + [0]
    k, v = store.gather(indices, "cpu")
    assert torch.equal(k, torch.cat([kept[i][0] for i in indices], dim=1))
    assert torch.equal(v, torch.cat([kept[i][1] for i in indices], dim=1))
    store.clear()  # a new video starts the ring afresh on the same pages
    store.append(*pairs[0])
    assert (len(store), store.dropped) == (1, 0) and torch.equal(store[0][0], pairs[0][0])


def test_max_blocks_must_keep_one():
    with pytest.raises(ValueError, match="max_blocks must be >= 1, got 0"):
        BlockStore(max_blocks=0)
