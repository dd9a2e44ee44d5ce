"""StreamForest's memory (stc_cli/models/streamforest_memory.py) against outputs recorded from upstream's
MemoryManager (fixtures/streamforest/make_reference.py says how), and on hand-worked cases."""

import importlib.util
import json
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stc_cli.models.streamforest_memory import EventMemory

FIXTURES = Path(__file__).parent / "fixtures" / "streamforest"


def _load_scenarios():
    spec = importlib.util.spec_from_file_location(
        "streamforest_make_reference", FIXTURES / "make_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _load_scenarios()
RECORD = json.loads((FIXTURES / "reference.json").read_text())
TENSORS = load_file(str(FIXTURES / "reference.safetensors"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: on two busy shared cores, OpenMP's hand-offs cost ten times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def _frames(name):
    scenario = REF.SCENARIOS[name]
    dtype = getattr(torch, scenario.get("dtype", "float32"))
    frames = REF.make_frames(dim=scenario["config"]["dim"], **scenario["frames"])
    return tuple(frame.to(dtype) for frame in frames)


def _run(name, mem=None):
    """Feed the scenario's frames and read at its call points; returns the outputs and memories' states."""
    scenario = REF.SCENARIOS[name]
    frames = _frames(name)
    mem = mem or EventMemory(**scenario["config"])
    outs, states, fed = [], [], 0
    for count in scenario["calls"]:
        for frame in frames[fed:count]:
            mem.update(frame)
        fed = count
        outs.append(mem.tokens())
        states.append(([e.shape[0] for e in mem._events], list(mem._counts)))
    return outs, states


def _assert_checksums(out, expected):
    ours = REF.checksums(out)
    assert ours["shape"] == expected["shape"]
    # An error of e per value moves each sum by at most e * (N * C) * max weight (97).
    tol = 1e-5 * out.numel() * 97
    for key in ("sum", "abs_sum", "ordered"):
        assert ours[key] == pytest.approx(expected[key], abs=tol), key


@pytest.mark.parametrize("name", list(REF.SCENARIOS))
def test_matches_upstream(name):
    """Every read equals upstream's (exact tensors for the small configs, checksums at the real token
    counts), with the same event structure; a second read in a row returns the same tokens."""
    record = RECORD["scenarios"][name]
    frames = _frames(name)
    assert float(torch.stack(frames).double().sum()) == record["input_sum"], "input generator changed"
    outs, states = _run(name)
    calls = REF.SCENARIOS[name]["calls"]
    for k, (out, (slots, counts), expected) in enumerate(zip(outs, states, record["calls"], strict=True)):
        assert out.dtype == frames[0].dtype
        assert slots == expected["state"]["event_slots"]
        assert counts == expected["state"]["merge_counts"]
        _assert_checksums(out, expected["checksums"])
        if k > 0 and calls[k - 1] == calls[k]:
            assert torch.equal(out, outs[k - 1])
        elif f"{name}/{k}" in TENSORS:
            reference = TENSORS[f"{name}/{k}"]
            assert out.shape == reference.shape
            torch.testing.assert_close(
                out, reference, atol=1e-5 if out.dtype == torch.float32 else 1e-3, rtol=0
            )


def test_streaming_reads_change_the_result():
    """Reading along the way merges differently from one read at the end (spec 3.6), as upstream does:
    same token count, other tokens."""
    streamed = TENSORS[f"small_stream/{len(REF.SCENARIOS['small_stream']['calls']) - 1}"]
    once = TENSORS["small_parity/0"]
    assert streamed.shape == once.shape
    assert not torch.allclose(streamed, once)


# --- hand-worked ToMe merges, read through the short window: frame 0 is merged to tokens[1] there ---

# A tokens (even) t0, t2, t4 and B tokens (odd) t1, t3, t5. Cosines: t0 -> t3 0.8, t2 -> t1 12/13,
# t4 -> t5 1.0 (each A token's best B token).
SIX = torch.tensor([[3.0, 4.0], [1.0, 0.0], [12.0, 5.0], [0.0, 1.0], [-2.0, 0.0], [-1.0, 0.0]])


def _short_frame(frame, target, heads=1):
    """What frame becomes in the short window with tokens=(P, target)."""
    mem = EventMemory(frame.shape[1], heads, tokens=(frame.shape[0], target), long_tokens_per_frame=1)
    mem.update(frame)
    mem.update(frame)
    return mem.tokens()[:target]


def test_merge_one_token():
    """r = 1: t4 (best score) goes into t5 as their mean; the other A tokens follow in descending score
    order (t2 before t0, against their index order), then the B tokens in order."""
    expected = torch.stack([SIX[2], SIX[0], SIX[1], SIX[3], (SIX[4] + SIX[5]) / 2])
    torch.testing.assert_close(_short_frame(SIX, 5), expected, atol=0, rtol=0)


def test_merge_two_tokens():
    """r = 2: t4 into t5 and t2 into t1; t0 alone survives from A."""
    expected = torch.stack([SIX[0], (SIX[2] + SIX[1]) / 2, SIX[3], (SIX[4] + SIX[5]) / 2])
    torch.testing.assert_close(_short_frame(SIX, 4), expected, atol=0, rtol=0)


def test_merge_uses_the_head_mean():
    """The metric averages the heads: tokens [m + d, m - d] (2 heads) match as m does, whatever d, while
    the merged values are the full tokens. The d make plain cosine pick other pairs."""
    d = torch.tensor([[50.0, -3.0], [-40.0, 7.0], [9.0, 60.0], [30.0, 30.0], [-5.0, -70.0], [70.0, 5.0]])
    frame = torch.cat([SIX + d, SIX - d], dim=1)
    expected = torch.stack([frame[2], frame[0], frame[1], frame[3], (frame[4] + frame[5]) / 2])
    torch.testing.assert_close(_short_frame(frame, 5, heads=2), expected, atol=0, rtol=0)
    # The same frame with one head (plain cosine) merges otherwise.
    assert not torch.equal(_short_frame(frame, 5, heads=1), expected)


def test_merge_two_into_one_token_averages_all_three():
    """Both A tokens best match t1: it becomes the mean of three tokens."""
    frame = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([[4.0 / 3.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(_short_frame(frame, 2), expected)


def test_merge_sizes_carry_across_steps():
    """5 -> 1 takes three steps (remove 2, 1, 1); with sizes carried the last token is the plain mean of
    all five, which it would not be if each step restarted at size 1."""
    frame = REF.uniform(7, 5 * 4).reshape(5, 4)
    torch.testing.assert_close(_short_frame(frame, 1), frame.mean(0, keepdim=True))


# --- event splits ---


def _scenes(cut, frames=6, dim=4):
    """Frames 0..cut-1 near one direction, the rest near an orthogonal one (each with its own noise)."""
    a, b = torch.eye(dim)[0], torch.eye(dim)[1]
    out = []
    for t in range(frames):
        base = a if t < cut else b
        out.append(base + 0.05 * REF.uniform(100 + t, 4 * dim).reshape(4, dim))
    return out


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_event_split_at_least_similar_pair(cut):
    """windows=(1, 2), split_window=3: after 6 frames the short window holds 5 >= 2 + 3, the oldest 3
    pairs are candidates and the cut falls between the two scenes; the popped frames are merged into one
    event of cut * 2 tokens, the other frames stay untouched (tokens[1] == tokens[0])."""
    frames = _scenes(cut)
    mem = EventMemory(
        4, 1, windows=(1, 2), tokens=(4, 4), split_window=3, long_tokens_per_frame=2, long_quota=100
    )
    for frame in frames:
        mem.update(frame)
    out = mem.tokens()
    assert out.shape == (2 * cut + 4 * (6 - cut), 4)
    torch.testing.assert_close(out[2 * cut :], torch.cat(frames[cut:]), atol=0, rtol=0)
    # The event holds only the first scene: every token is a mean of first-scene tokens.
    assert bool((out[: 2 * cut, 0] > 0.8).all()) and bool((out[: 2 * cut, 1].abs() < 0.2).all())


def test_event_split_waits_for_the_window():
    """With one frame fewer the short window (4) is below windows[1] + split_window: no event."""
    mem = EventMemory(
        4, 1, windows=(1, 2), tokens=(4, 4), split_window=3, long_tokens_per_frame=2, long_quota=100
    )
    frames = _scenes(2, frames=5)
    for frame in frames:
        mem.update(frame)
    torch.testing.assert_close(mem.tokens(), torch.cat(frames), atol=0, rtol=0)


def test_long_memory_time_weight_merges_oldest_first():
    """With only the time weight, the pair with the oldest centre always merges: every frame becomes an
    event (split_window 1), and the events fold into the first one until two slots fit the quota."""
    mem = EventMemory(
        4,
        1,
        windows=(1, 1),
        tokens=(4, 4),
        split_window=1,
        long_tokens_per_frame=2,
        long_quota=4,
        weights=(0, 1, 0),
    )
    for frame in _scenes(3, frames=10):
        mem.update(frame)
    out = mem.tokens()
    # 10 frames: 1 now, 1 short, 8 single-slot events merged down to 2 slots of 2 tokens.
    assert out.shape == (2 * 2 + 4 + 4, 4)
    assert mem._counts == [7, 1]


# --- state ---


def test_reset_gives_a_fresh_memory():
    fresh, _ = _run("small_wide")
    mem = EventMemory(**REF.SCENARIOS["small_wide"]["config"])
    for frame in _frames("small_stream")[:20]:
        mem.update(frame[:36])
    mem.tokens()
    mem.reset()
    again, _ = _run("small_wide", mem)
    for a, b in zip(fresh, again, strict=True):
        assert torch.equal(a, b)


def test_output_is_not_the_state():
    """Writing into a returned tensor does not change the memory."""
    mem = EventMemory(**REF.SCENARIOS["small_stream"]["config"])
    for frame in _frames("small_stream")[:10]:
        mem.update(frame)
    out = mem.tokens()
    kept = out.clone()
    out.zero_()
    assert torch.equal(mem.tokens(), kept)


# --- errors ---


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(dim=10, heads=4),
        dict(dim=8, heads=2, tokens=(8, 9)),
        dict(dim=8, heads=2, tokens=(8, 4), long_tokens_per_frame=5),
        dict(dim=8, heads=2, tokens=(8, 4), long_tokens_per_frame=0),
        dict(dim=8, heads=2, windows=(0, 4)),
        dict(dim=8, heads=2, split_window=0),
    ],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        EventMemory(**kwargs)


def test_bad_frames_raise():
    mem = EventMemory(8, 2, tokens=(6, 4), long_tokens_per_frame=2)
    with pytest.raises(ValueError, match="empty"):
        mem.tokens()
    with pytest.raises(ValueError, match="at least"):
        mem.update(torch.zeros(5, 8))  # fewer tokens than tokens[0]: upstream's assert
    with pytest.raises(ValueError):
        mem.update(torch.zeros(6, 16))  # wrong channel count: upstream would reshape it silently
    with pytest.raises(ValueError):
        mem.update(torch.zeros(1, 6, 8))
    mem.update(torch.randn(7, 8))  # more tokens than tokens[0] are merged down, as upstream
    assert mem.tokens().shape == (6, 8)


def test_event_cuts_follow_a_given_similarity():
    """windows (1, 2), split 2: after 5 frames 4 are short, so the oldest 1 or 2 (argmin of the first two
    similarities + 1) become an event of 2 tokens per frame. Cut 2: 4 + 2 * 4 + 8 = 20 tokens; cut 1:
    2 + 3 * 4 + 8 = 22 (the frames' own similarities are ignored)."""
    frames = torch.randn(5, 8, 8, generator=torch.Generator().manual_seed(1))
    sizes = dict(windows=(1, 2), tokens=(8, 4), split_window=2, long_tokens_per_frame=2, long_quota=100)
    for sims, expected in (((0.9, 0.1), 20), ((0.1, 0.9), 22)):
        memory = EventMemory(8, 2, **sizes)
        for frame, sim in zip(frames, (0.0, *sims, 0.5, 0.5), strict=True):
            memory.update(frame, torch.tensor(sim))
        assert len(memory.tokens()) == expected
