import pytest
import torch
import torch.nn.functional as F

from stc_cli.compress import STCPruner
from stc_cli.compress.pruner import gaussian_similarity
from tests.compress.spec_reference import ReferencePruner

# Channels 0 and 1 are loud (variance 2500) in every chunk below, so scoring uses channels 2 and 3.
LOUD = torch.tensor([[50.0, -50.0], [-50.0, 50.0], [50.0, 50.0], [-50.0, -50.0]])


def chunk(content):
    """One frame [1, 4, 4]: the loud channels, then the two scoring channels given per token."""
    return torch.cat([LOUD, torch.tensor(content, dtype=torch.float32)], dim=1).unsqueeze(0)


# Three tokens point at u = (1, 0), one at v = (0, 1). Frame anchor (0.75, 0.25); memory anchor
# normalize(0.75, 0.25) = (0.949, 0.316). Squared distances: u 0.125 / 0.103, v 1.125 / 1.368,
# so v is the least similar to both anchors and is the one token kept.
ODD_ONE_OUT = [[1, 0], [1, 0], [1, 0], [0, 1]]
# u tokens (magnitude 1) at 0 and 2, v tokens (magnitude 2) at 1 and 3: equidistant from the frame
# anchor (0.5, 0.5); the memory anchor decides.
MIXED = [[1, 0], [0, 2], [1, 0], [0, 2]]
# A static scene: every token at 10 u; channel 3 jitters by 0.1 so its variance (0.01) ranks after
# channel 2's (0): the chunk mean is stored in channel order (2, 3) as (10, 0).
STATIC_U = [[10, 0.1], [10, -0.1], [10, 0.1], [10, -0.1]]


def test_keeps_the_token_unlike_the_others():
    kept, idx = STCPruner(tokens_per_frame=1).compress(chunk(ODD_ONE_OUT))
    assert idx.tolist() == [[3]] and idx.dtype == torch.int64
    assert torch.equal(kept, chunk(ODD_ONE_OUT)[:, [3]])


def test_each_frame_of_a_chunk_gets_its_own_budget():
    frame0 = chunk(ODD_ONE_OUT)[0]
    frame1 = frame0[[3, 0, 1, 2]]  # the odd token first; same channel variances
    kept, idx = STCPruner(tokens_per_frame=1).compress(torch.stack([frame0, frame1]))
    assert idx.tolist() == [[3], [0]]
    assert torch.equal(kept[:, 0], torch.stack([frame0[3], frame1[0]]))


def test_memory_of_earlier_chunks_decides_what_is_novel():
    # Alone, MIXED's memory is normalize(0.5, 1): it leans to v, so the u tokens are novel.
    assert STCPruner(tokens_per_frame=2).compress(chunk(MIXED))[1].tolist() == [[0, 2]]
    # After a static u scene the memory is mean((10, 0), (0.5, 1)) = (5.25, 0.5): now v is novel.
    pruner = STCPruner(tokens_per_frame=2)
    pruner.compress(chunk(STATIC_U))
    assert pruner.compress(chunk(MIXED))[1].tolist() == [[1, 3]]
    assert len(pruner.history) == 2
    pruner.reset()  # a new video forgets the scene
    assert len(pruner.history) == 0
    assert pruner.compress(chunk(MIXED))[1].tolist() == [[0, 2]]


def test_memory_window_keeps_only_the_last_chunks():
    pruner = STCPruner(tokens_per_frame=2, memory_window=1)
    pruner.compress(chunk(STATIC_U))
    assert pruner.compress(chunk(MIXED))[1].tolist() == [[0, 2]]  # the static scene fell out
    assert len(pruner.history) == 1


def test_memory_keeps_each_chunks_channel_order_as_released():
    # Channel 2 now varies more than channel 3 (1 vs 0.01), so this chunk's mean is stored in order
    # (3, 2) as (0, 10): read in MIXED's order (2, 3) it points at v. The memory (0.25, 5.5) leans
    # to v and the u tokens stay novel: the released code's behaviour, which the default keeps.
    drifted = [[11, 0.1], [9, -0.1], [11, 0.1], [9, -0.1]]
    pruner = STCPruner(tokens_per_frame=2)
    pruner.compress(chunk(drifted))
    assert pruner.compress(chunk(MIXED))[1].tolist() == [[0, 2]]


def test_keeping_every_token_is_the_identity():
    features = torch.randn(3, 5, 8)
    kept, idx = STCPruner(tokens_per_frame=5).compress(features)
    assert kept is features
    assert idx.tolist() == [[0, 1, 2, 3, 4]] * 3


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("window", [None, 2])
def test_matches_step_by_step_spec_over_a_stream(frames, window):
    torch.manual_seed(frames)
    pruner, spec = STCPruner(tokens_per_frame=7, memory_window=window), ReferencePruner(7, window=window)
    drift = torch.randn(1, 1, 64)
    for c in range(6):
        features = torch.randn(frames, 25, 64) + c * drift
        kept, idx = pruner.compress(features)
        want_kept, want_idx = spec.compress(features)
        assert idx.tolist() == want_idx.tolist()
        assert torch.equal(kept, want_kept)


def test_window_equals_a_fresh_pruner_fed_the_last_chunks():
    torch.manual_seed(0)
    stream = [torch.randn(2, 16, 32) + 0.3 * c for c in range(9)]
    windowed = STCPruner(tokens_per_frame=4, memory_window=3)
    for features in stream:
        got = windowed.compress(features)[1]
    fresh = STCPruner(tokens_per_frame=4)
    for features in stream[-3:]:
        want = fresh.compress(features)[1]
    assert torch.equal(got, want)


def test_state_is_bounded_with_a_window():
    pruner = STCPruner(tokens_per_frame=4, memory_window=8)
    for _ in range(100):
        pruner.compress(torch.randn(1, 16, 32))
    after_100 = pruner.state_nbytes()
    for _ in range(900):
        pruner.compress(torch.randn(1, 16, 32))
    assert pruner.state_nbytes() == after_100 == 8 * 16 * 4  # 8 means of 16 float32 channels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_in_float32(dtype):
    torch.manual_seed(0)
    features = torch.randn(2, 30, 16).to(dtype)
    kept, idx = STCPruner(tokens_per_frame=6).compress(features)
    _, want = STCPruner(tokens_per_frame=6).compress(features.float())
    assert kept.dtype == dtype and torch.equal(idx, want)
    assert torch.equal(kept, features.gather(1, idx.unsqueeze(-1).expand(-1, -1, 16)))


def test_gaussian_similarity_by_hand():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([0.0, 1.0])  # squared distance 1
    want = sum(torch.exp(torch.tensor(-1 / (2 * s))) for s in (1 / 8, 1 / 4, 1 / 2, 1, 2))
    torch.testing.assert_close(gaussian_similarity(a, b), want.reshape(1))


@pytest.mark.parametrize(
    ("device", "bandwidths"),
    [
        ("cpu", (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0)),
        ("cpu", (0.3, 0.7, 1.9)),
        pytest.param("cuda", (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0), marks=pytest.mark.gpu),
    ],
)
def test_gaussian_similarity_is_one_exp_per_bandwidth_summed_in_order_bit_for_bit(device, bandwidths):
    """The shared division and ``exp`` give the scores of one ``exp`` per bandwidth, added in order (the
    released code's form), so the pruner keeps the same tokens."""
    generator = torch.Generator().manual_seed(0)
    points = F.normalize(torch.randn(2, 196, 1792, generator=generator), dim=-1).to(device)
    anchor = points.mean(dim=1, keepdim=True)
    sq_dist = (points - anchor).pow(2).sum(dim=-1)
    want = sum(torch.exp(-sq_dist / (2 * a)) for a in bandwidths)
    assert torch.equal(gaussian_similarity(points, anchor, bandwidths), want)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="tokens_per_frame"):
        STCPruner(tokens_per_frame=0)
    with pytest.raises(ValueError, match="memory_window"):
        STCPruner(memory_window=0)
    pruner = STCPruner(tokens_per_frame=60)
    with pytest.raises(ValueError, match=r"tokens_per_frame=60 is more than the 49 tokens"):
        pruner.compress(torch.randn(1, 49, 8))
    with pytest.raises(
        ValueError, match=r"\[frames, tokens, channels\], got torch.float32 of shape \(196, 8\)"
    ):
        pruner.compress(torch.randn(196, 8))
    with pytest.raises(ValueError, match="non-empty float"):
        pruner.compress(torch.zeros(0, 196, 8))
    with pytest.raises(ValueError, match="non-empty float"):
        pruner.compress(torch.zeros(1, 196, 8, dtype=torch.int64))
    pruner.compress(torch.randn(1, 196, 8))
    with pytest.raises(ValueError, match="call reset"):
        pruner.compress(torch.randn(1, 196, 16))
    pruner.reset()
    assert pruner.compress(torch.randn(1, 196, 16))[0].shape == (1, 60, 16)


@pytest.mark.gpu
def test_cuda_half_keeps_what_it_says():
    torch.manual_seed(0)
    features = torch.randn(2, 196, 64, device="cuda", dtype=torch.float16)
    kept, idx = STCPruner(tokens_per_frame=60).compress(features)
    assert kept.is_cuda and kept.dtype == torch.float16 and idx.shape == (2, 60)
    assert torch.equal(idx, idx.sort(dim=1).values)
    assert torch.equal(kept, features.gather(1, idx.unsqueeze(-1).expand(-1, -1, 64)))
