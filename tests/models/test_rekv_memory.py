"""ReKV's layer memory against a per-query transcription of the spec (upstream-models.md section 5),
and its retrieval on hand-made keys."""

import pytest
import torch

from stc_cli.models.rekv_memory import LayerMemory

THETA, HEADS, KV_HEADS, DIM = 100.0, 4, 2, 8
SCALE = DIM**-0.5


def rotate(x, positions, theta):
    """RoPE as Qwen2 applies it (rotate-half), at integer ``positions``, in float32; ``x``'s dtype back."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    x32 = x.float()
    rotated = torch.cat((-x32[..., dim // 2 :], x32[..., : dim // 2]), dim=-1)
    return (x32 * angles.cos() + rotated * angles.sin()).to(x.dtype)


def reference_outputs(q, k, v, n_init, n_local):
    """Token by token: query p sees keys j with 0 <= p - j < n_local at their absolute positions, and
    the init tokens j < n_init with p - j >= n_local from the single angle n_local - 1, in one softmax."""
    k = k.repeat_interleave(HEADS // KV_HEADS, 0)
    v = v.repeat_interleave(HEADS // KV_HEADS, 0)
    length = q.shape[1]
    positions = torch.arange(length)
    q_abs, k_abs = rotate(q, positions, THETA), rotate(k, positions, THETA)
    q_sink = rotate(q, torch.full((length,), n_local - 1), THETA)
    out = torch.zeros_like(q)
    for p in range(length):
        window = [j for j in range(length) if 0 <= p - j < n_local]
        sink = [j for j in range(n_init) if p - j >= n_local]
        logits = torch.cat(
            (
                q_sink[:, p : p + 1] @ k[:, sink].transpose(1, 2),
                q_abs[:, p : p + 1] @ k_abs[:, window].transpose(1, 2),
            ),
            dim=-1,
        )
        weights = torch.softmax(logits * SCALE, dim=-1)
        out[:, p] = (weights @ torch.cat((v[:, sink], v[:, window]), dim=1))[:, 0]
    return out


def stream(n_init, blocks, block, seed=0):
    generator = torch.Generator().manual_seed(seed)
    length = n_init + blocks * block
    q = torch.randn(HEADS, length, DIM, generator=generator)
    k = torch.randn(KV_HEADS, length, DIM, generator=generator)
    v = torch.randn(KV_HEADS, length, DIM, generator=generator)
    return q, k, v


def memory(n_local, block, static=False):
    return LayerMemory(n_local=n_local, block=block, theta=THETA, scale=SCALE, static=static)


@pytest.mark.parametrize("static", [False, True], ids=["growing window", "ring window"])
@pytest.mark.parametrize(
    ("n_init", "n_local", "block", "chunks"),
    [
        (3, 100, 4, [1, 1, 1, 1, 1, 1]),  # never outgrows the window: plain causal attention
        (3, 9, 4, [1, 1, 1, 1, 1, 1]),  # outgrows it at the second frame: the sink path
        (5, 6, 2, [2, 1, 3, 1]),  # several frames per call, window shorter than the init prompt + a frame
    ],
)
def test_encoding_matches_the_spec_token_by_token(n_init, n_local, block, chunks, static):
    q, k, v = stream(n_init, sum(chunks), block)
    mem = memory(n_local, block, static)
    outputs = [mem.encode(q[:, :n_init], k[:, :n_init], v[:, :n_init])]
    start = n_init
    for frames in chunks:
        end = start + frames * block
        outputs.append(mem.encode(q[:, start:end], k[:, start:end], v[:, start:end]))
        start = end
    expected = reference_outputs(q, k, v, n_init, n_local)
    torch.testing.assert_close(torch.cat(outputs, dim=1), expected, rtol=1e-5, atol=1e-5)
    assert mem.length == start
    if static:  # the window's last n_local + block tokens, each in slot (stream index) % (n_local + block)
        assert int(mem.ring.length) == start and mem.local_k is None
        assert sorted(mem.ring.key_at.tolist())[-min(start, n_local + block) :] == list(
            range(max(0, start - n_local - block), start)
        )
    else:
        assert mem.local_k.shape[1] == min(n_local, start)
    assert len(mem.blocks) == sum(chunks)  # one block per frame, init excluded
    torch.testing.assert_close(mem.blocks[-1][0], k[:, start - block : start])


def test_half_precision_logits_beyond_65504_stay_finite_on_the_sink_path():
    """q . k above float16's largest value: the product must not be formed in half precision before
    scaling, or it becomes inf, then NaN, and poisons the window for the rest of the video."""
    n_init, n_local, block = 3, 9, 4
    q, k, v = (t * 120 for t in stream(n_init, 4, block, seed=3))
    assert (q[:1] @ k[:1].transpose(1, 2)).abs().max() > 65504
    half = memory(n_local, block)
    half.encode(q[:, :n_init].half(), k[:, :n_init].half(), v[:, :n_init].half())
    out = half.encode(q[:, n_init:].half(), k[:, n_init:].half(), v[:, n_init:].half())  # reaches the sink
    expected = reference_outputs(q.half().double(), k.half().double(), v.half().double(), n_init, n_local)
    assert out.isfinite().all()
    # within float16's step near the values (0.0625 at 120)
    torch.testing.assert_close(out.double(), expected[:, n_init:], rtol=0, atol=0.1)


def test_a_chunk_of_partial_blocks_is_refused():
    q, k, v = stream(2, 1, 4)
    mem = memory(50, 4)
    mem.encode(q[:, :2], k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="whole blocks of 4 tokens, got 3"):
        mem.encode(q[:, 2:5], k[:, 2:5], v[:, 2:5])


def test_blocks_of_variable_size_attend_as_the_spec_and_are_read_back_whole():
    """``--compress dtd`` keeps a variable number of tokens per frame: blocks of ``sizes`` tokens, each
    still one sub-chunk; attention is per token, so the outputs are the spec's whatever the sizes."""
    n_init, n_local, sizes = 3, 9, [4, 1, 3, 2, 4]
    q, k, v = stream(n_init, 14, 1)
    mem = memory(n_local, block=4)
    outputs = [mem.encode(q[:, :n_init], k[:, :n_init], v[:, :n_init])]
    outputs.append(mem.encode(q[:, 3:8], k[:, 3:8], v[:, 3:8], sizes=[4, 1]))
    outputs.append(mem.encode(q[:, 8:], k[:, 8:], v[:, 8:], sizes=[3, 2, 4]))
    torch.testing.assert_close(
        torch.cat(outputs, dim=1), reference_outputs(q, k, v, n_init, n_local), rtol=1e-5, atol=1e-5
    )
    starts = [3, 7, 8, 11, 13, 17]  # each block's first stream index
    assert [mem.blocks[i][0].shape[1] for i in range(5)] == sizes
    for i in range(5):
        assert torch.equal(mem.blocks[i][0], k[:, starts[i] : starts[i + 1]])
    chosen_k, chosen_v = mem.blocks.gather([1, 2, 4], "cpu")  # tokens 7, 8-10, 13-16
    assert torch.equal(chosen_k, k[:, [7, 8, 9, 10, 13, 14, 15, 16]])
    assert torch.equal(chosen_v, v[:, [7, 8, 9, 10, 13, 14, 15, 16]])
    assert mem.blocks.nbytes() == 2 * 14 * KV_HEADS * DIM * 4  # the tokens stored, not the slots
    # a block's representative is the mean of its own tokens' (GQA-expanded) keys
    torch.testing.assert_close(mem.block_repr[1], k[:, 7].repeat_interleave(2, 0).reshape(-1))


@pytest.mark.parametrize(("sizes", "tokens"), [([5], 5), ([0, 2], 2), ([2, 2], 3)])
def test_block_sizes_that_do_not_fit_are_refused(sizes, tokens):
    q, k, v = stream(2, tokens, 1)
    mem = memory(50, 4)
    mem.encode(q[:, :2], k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="at most 4 each"):
        mem.encode(q[:, 2:], k[:, 2:], v[:, 2:], sizes=sizes)


def test_blocks_are_chosen_by_dot_product_with_the_mean_query_in_temporal_order():
    # one KV head, two query heads, D = 2: a block's representative is its mean key repeated per head
    mem = LayerMemory(n_local=50, block=1, theta=THETA, scale=1.0)
    one = torch.ones(2, 1, 2)
    mem.encode(one, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))  # init prompt of one token
    keys = [[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [-1.0, 2.0]]
    for key in keys:
        mem.encode(one, torch.tensor([[key]]), torch.zeros(1, 1, 2))
    # mean query over two tokens: head 0 -> (1, 0), head 1 -> (0.5, 0.5); score = k.(1, 0) + k.(0.5, 0.5)
    # blocks: 1 + 0.5 = 1.5, 0 + 0.5 = 0.5, 3 + 1.5 = 4.5, -1 + 0.5 = -0.5 -> top 2 = blocks 2 and 0
    question = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    assert mem.choose(question, topk=2) == [0, 2]
    assert mem.choose(question, topk=3) == [0, 1, 2]
    assert mem.choose(question, topk=4) == [0, 1, 2, 3]  # all blocks, no scoring


def test_answering_leaves_the_video_memory_as_it_was():
    n_init, block = 3, 2
    q, k, v = stream(n_init, 4, block)
    mem = memory(7, block)
    mem.encode(q[:, :n_init], k[:, :n_init], v[:, :n_init])
    mem.encode(q[:, n_init:], k[:, n_init:], v[:, n_init:])
    before = (mem.length, len(mem.blocks), mem.local_k.clone(), mem.block_repr.clone(), mem.nbytes())
    question = torch.randn(HEADS, 3, DIM)
    mem.retrieve(question, torch.randn(KV_HEADS, 3, DIM), torch.randn(KV_HEADS, 3, DIM), topk=2)
    assert mem.answer_k.shape[1] == n_init + 2 * block  # init + 2 chosen blocks; the question is not kept
    mem.extend(question[:, :2], torch.randn(KV_HEADS, 2, DIM), torch.randn(KV_HEADS, 2, DIM))
    assert mem.answer_k.shape[1] == n_init + 2 * block + 2
    mem.end_answer()
    assert mem.answer_k is None
    after = (mem.length, len(mem.blocks), mem.local_k, mem.block_repr, mem.nbytes())
    assert after[:2] == before[:2] and after[4] == before[4]
    assert torch.equal(after[2], before[2]) and torch.equal(after[3], before[3])


def test_the_answer_cache_is_attended_like_the_stream_it_would_be():
    """Retrieving every block, the answer cache is the stream itself: a prompt token appended to it
    gets the output the encoder would give the same token at the end of the stream."""
    n_init, block, n_local = 3, 2, 6
    q, k, v = stream(n_init, 3, block)
    extra_q, extra_k, extra_v = (
        torch.randn(HEADS, 1, DIM),
        torch.randn(KV_HEADS, 1, DIM),
        torch.randn(KV_HEADS, 1, DIM),
    )
    mem = memory(n_local, block)
    mem.encode(q[:, :n_init], k[:, :n_init], v[:, :n_init])
    mem.encode(q[:, n_init:], k[:, n_init:], v[:, n_init:])
    mem.retrieve(
        torch.randn(HEADS, 2, DIM), torch.randn(KV_HEADS, 2, DIM), torch.randn(KV_HEADS, 2, DIM), topk=3
    )
    got = mem.extend(extra_q, extra_k, extra_v)
    expected = reference_outputs(
        torch.cat((q, extra_q), 1), torch.cat((k, extra_k), 1), torch.cat((v, extra_v), 1), n_init, n_local
    )[:, -1:]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def answer_outputs(mem, n_init, q, k, v, topk):
    """Encode the stream, retrieve ``topk`` blocks, extend by two tokens: every output, and the cache."""
    outputs = [mem.encode(q[:, :n_init], k[:, :n_init], v[:, :n_init])]
    outputs.append(mem.encode(q[:, n_init:], k[:, n_init:], v[:, n_init:]))
    outputs.append(mem.retrieve(q[:, -3:], k[:, -3:], v[:, -3:], topk=topk))
    outputs.append(mem.extend(q[:, :2], k[:, :2], v[:, :2]))
    return outputs, mem.answer_k, mem.answer_v


@pytest.mark.parametrize("topk", [2, 3, 5])
def test_outputs_do_not_depend_on_the_page_size(topk):
    n_init, block = 3, 2
    q, k, v = stream(n_init, 7, block, seed=4)
    runs = []
    for page_blocks in (None, 1, 2, 3):
        mem = LayerMemory(n_local=7, block=block, theta=THETA, scale=SCALE, page_blocks=page_blocks)
        runs.append(answer_outputs(mem, n_init, q, k, v, topk))
    for outputs, answer_k, answer_v in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outputs, runs[0][0], strict=True))
        assert torch.equal(answer_k, runs[0][1]) and torch.equal(answer_v, runs[0][2])


def test_the_chosen_blocks_of_two_pages_are_what_was_stored():
    # the keys of the choosing test, two blocks per page: blocks 0 and 2 are chosen, on pages 0 and 1
    mem = LayerMemory(n_local=50, block=1, theta=THETA, scale=1.0, page_blocks=2)
    one = torch.ones(2, 1, 2)
    mem.encode(one, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [-1.0, 2.0]])
    values = torch.randn(4, 2)
    for key, value in zip(keys, values, strict=True):
        mem.encode(one, key.reshape(1, 1, 2), value.reshape(1, 1, 2))
    assert len(mem.blocks.pages) == 2
    question = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    assert mem.choose(question, topk=2) == [0, 2]
    mem.retrieve(question, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), topk=2)
    assert torch.equal(mem.answer_k, torch.stack((torch.zeros(2), keys[0], keys[2]))[None])
    assert torch.equal(mem.answer_v, torch.stack((torch.zeros(2), values[0], values[2]))[None])


def test_recent_retrieval_answers_from_the_last_blocks_whatever_they_score():
    # the choosing test's keys: by score blocks 0 and 2 would be chosen; recent takes 2 and 3
    mem = LayerMemory(n_local=50, block=1, theta=THETA, scale=1.0)
    one = torch.ones(2, 1, 2)
    mem.encode(one, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [-1.0, 2.0]])
    for key in keys:
        mem.encode(one, key.reshape(1, 1, 2), torch.zeros(1, 1, 2))
    question = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    mem.retrieve(question, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), topk=2, recent=True)
    assert torch.equal(mem.answer_k, torch.stack((torch.zeros(2), keys[2], keys[3]))[None])
    mem.end_answer()
    mem.retrieve(question, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), topk=9, recent=True)
    assert torch.equal(mem.answer_k, torch.cat((torch.zeros(1, 2), keys))[None])  # fewer blocks: all


def test_reset_reuses_the_pages_and_forgets_the_video():
    n_init, block = 3, 2
    first, second = stream(n_init, 7, block, seed=5), stream(n_init, 7, block, seed=6)
    mem = LayerMemory(n_local=7, block=block, theta=THETA, scale=SCALE, page_blocks=3)
    answer_outputs(mem, n_init, *first, topk=3)
    pages, held = [page.data_ptr() for page in mem.blocks.pages], mem.nbytes()
    mem.end_answer()
    mem.reset()
    assert (mem.length, len(mem.blocks), mem.init_k, mem.local_k, mem.block_repr) == (0, 0, None, None, None)
    assert mem.nbytes() == 0 and mem.blocks.capacity_nbytes() == 3 * 3 * 2 * KV_HEADS * block * DIM * 4
    reused = answer_outputs(mem, n_init, *second, topk=3)
    assert [page.data_ptr() for page in mem.blocks.pages] == pages and mem.nbytes() == held
    fresh = answer_outputs(memory(7, block), n_init, *second, topk=3)
    assert all(torch.equal(a, b) for a, b in zip(reused[0], fresh[0], strict=True))
    assert torch.equal(reused[1], fresh[1]) and torch.equal(reused[2], fresh[2])


def test_nbytes_counts_the_blocks_stored_not_the_pages():
    n_init, block = 3, 2
    q, k, v = stream(n_init, 4, block)
    sizes = []
    for page_blocks in (1, 3, 100):
        mem = LayerMemory(n_local=5, block=block, theta=THETA, scale=SCALE, page_blocks=page_blocks)
        mem.encode(q[:, :n_init], k[:, :n_init], v[:, :n_init])
        mem.encode(q[:, n_init:], k[:, n_init:], v[:, n_init:])
        sizes.append(mem.nbytes())
    # init K and V, the window's K and V (5 tokens), 4 representatives [H * D], 4 blocks of K and V
    expected = (
        2 * KV_HEADS * n_init * DIM + 2 * KV_HEADS * 5 * DIM + 4 * HEADS * DIM + 4 * 2 * KV_HEADS * 2 * DIM
    ) * 4
    assert sizes == [expected] * 3


def test_block_representatives_grow_past_their_buffer_and_reuse_it_for_the_next_video():
    """150 one-token blocks: the buffer doubles past 64 and 128 rows; every row is its block's mean key
    (one token: the key itself, GQA-expanded); a new video writes over the same buffer."""
    q, k, v = stream(1, 150, 1)
    mem = memory(n_local=8, block=1)
    mem.encode(q[:, :1], k[:, :1], v[:, :1])
    mem.encode(q[:, 1:], k[:, 1:], v[:, 1:])
    expected = k[:, 1:].repeat_interleave(HEADS // KV_HEADS, 0).transpose(0, 1).reshape(150, -1)
    assert torch.equal(mem.block_repr, expected) and mem._reprs.shape[0] == 256
    buffer = mem._reprs.data_ptr()
    mem.reset()
    mem.encode(q[:, :1], k[:, :1], v[:, :1])
    mem.encode(q[:, 1:3], k[:, 1:3], v[:, 1:3])
    assert mem.block_repr.shape[0] == 2 and mem._reprs.data_ptr() == buffer


@pytest.mark.parametrize("topk", [2, 5])
def test_a_ring_window_answers_as_the_growing_window_and_forgets_the_last_video(topk):
    """Past the window (the sink path), then retrieval and the answer cache; then a second, shorter video
    in the same ring buffers: the stale slots of the first never reach a query."""
    q, k, v = stream(3, 6, 4)
    growing, ring = memory(9, 4), memory(9, 4, static=True)
    for got, want in zip(*(answer_outputs(m, 3, q, k, v, topk)[0] for m in (ring, growing)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    buffers = ring.ring.k
    q, k, v = stream(3, 2, 4, seed=1)
    growing, _ = memory(9, 4), ring.reset()
    for got, want in zip(*(answer_outputs(m, 3, q, k, v, topk)[0] for m in (ring, growing)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert ring.ring.k is buffers and ring.ring.buffers == 2  # the window's buffers and the init's, once


def test_an_init_prompt_longer_than_the_ring_is_refused():
    q, k, v = stream(14, 0, 4)
    with pytest.raises(ValueError, match="init prompt's 14 tokens do not fit a window of 13"):
        memory(9, 4, static=True).encode(q, k, v)


def test_a_static_answer_cache_refuses_to_outgrow_the_room_it_was_given():
    q, k, v = stream(3, 2, 4)
    mem = memory(9, 4, static=True)
    answer_outputs(mem, 3, q, k, v, topk=2)  # init 3 + 2 blocks of 4, the question, 2 tokens: 1024 slots
    assert mem.answer_buffer.size == 1024 and mem.answer_k.shape[1] == 3 + 2 * 4 + 2
    for _ in range(1024 - 13):
        mem.extend(q[:, :1], k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="the answer outgrew its 1024 slots"):
        mem.extend(q[:, :1], k[:, :1], v[:, :1])


@pytest.mark.parametrize("static", [False, True])
def test_max_blocks_retrieves_among_the_newest_blocks_only(static):
    """Ten frames into a memory that keeps 4 blocks: a question chooses among the last 4 as a memory
    holding all ten would among those same four, and the answer cache holds the chosen ones."""
    q, k, v = stream(3, 10, 4)
    everything = memory(9, 4)
    capped = LayerMemory(n_local=9, block=4, theta=THETA, scale=SCALE, static=static, max_blocks=4)
    for mem in (everything, capped):
        mem.encode(q[:, :3], k[:, :3], v[:, :3])
        mem.encode(q[:, 3:], k[:, 3:], v[:, 3:])
    assert len(capped.blocks) == 4 and capped.blocks.dropped == 6
    torch.testing.assert_close(capped.block_repr, everything.block_repr[-4:], rtol=0, atol=0)
    question = q[:, -3:]
    query = question.float().mean(dim=1).reshape(-1)
    expected = sorted((everything.block_repr[-4:].float() @ query).topk(2).indices.tolist())
    assert capped.choose(question, 2) == expected
    capped.retrieve(question, k[:, -3:], v[:, -3:], topk=2)
    first = 3 + 6 * 4  # the stream index of the oldest block kept
    chosen = [k[:, first + 4 * i : first + 4 * i + 4] for i in expected]
    torch.testing.assert_close(capped.answer_k, torch.cat([k[:, :3], *chosen], dim=1), rtol=0, atol=0)
    held = capped.nbytes()
    capped.encode(q[:, 3:7], k[:, 3:7], v[:, 3:7])  # one more frame: one dropped, as much held
    assert capped.nbytes() == held
