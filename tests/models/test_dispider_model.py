"""Dispider (stc_cli/models/dispider*.py) on the tiny random model: per-clip perception and its read-outs,
the clip store of the stream protocol, the parity protocol's clips per question, STC (cacher on the CLIP
tower, CLS included, reference carried across clips; pruner state in stream order, kept indices per clip), the
reaction input, greedy decoding, the proactive loop, defaults and refusals."""

from dataclasses import replace

import pytest
import torch

from stc_cli.benchmarks.base import Query
from stc_cli.compress import STCPruner
from stc_cli.configs import EvalConfig
from stc_cli.models.base import STCSettings, Step
from stc_cli.models.dispider import Dispider, stc_settings
from stc_cli.models.dispider_glue import clip_text, mix_2x2, row_roles, sample_indices
from stc_cli.models.dispider_load import build_random
from stc_cli.protocols import resolve

NO_STC = STCSettings(cacher=False, pruner=False)
STC = STCSettings(cache_interval=4, update_ratio=0.25, tokens_per_frame=2)
QUERY = Query("demo/q", "demo", "color", "c", "v.mp4", (0.0, 10.0), "What colour?", ("red", "green"), "A")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _inference():
    with torch.inference_mode():  # the model's tensors are inference tensors; no test needs gradients
        yield


@pytest.fixture(scope="module")
def net():
    return build_random("tiny")  # CLIP 56 px / 14: 16 patches + CLS, 4 mixed tokens; 4 frames per clip


@pytest.fixture(scope="module")
def frames():
    return torch.randint(
        0, 256, (10, 40, 60, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture
def make(net):
    made = []

    def build(stc=NO_STC, protocol="dispider-stream", max_new_tokens=3):
        chosen = resolve("dispider", "demo", protocol).override(max_new_tokens=max_new_tokens)
        model = Dispider(net, stc, chosen)
        made.append(model)
        return model

    yield build
    for model in made:
        if model.cacher:
            model.cacher.detach()


def times(n):
    return tuple(float(t) for t in range(n))


def stock_tokens(net, frames):
    """CLIP's selected layer without CLS, 2x2-mixed, one call for all frames, no STC."""
    from stc_cli.models.dispider_perception import Perception

    pixels = net.transform(Perception(net, None, None).squash(frames))
    states = net.vision(pixel_values=pixels, output_hidden_states=True).hidden_states
    return mix_2x2(states[-2][:, 1:])


def test_a_clip_row_reads_memory_at_the_slots_and_time_at_the_last_token(net, frames, make):
    model = make()
    model.add_frames(frames[:4], times(4))
    (clip,) = model.perception.stored
    tokens = stock_tokens(net, frames[:4])
    torch.testing.assert_close(clip.tokens, tokens)  # [4 frames, 4 mixed tokens, 128]
    text = net.compact_tokenizer(clip_text(0, 3), add_special_tokens=False).input_ids
    row = torch.cat([net.compact.embed_tokens(torch.tensor(text)), net.pool(tokens.reshape(16, 128))])
    states = net.compact(inputs_embeds=row[None]).last_hidden_state[0]
    roles = torch.tensor(row_roles(len(text), 4, 4, 1))
    assert len(row) == len(text) + 16 + 4 + 1
    torch.testing.assert_close(clip.memory, states[roles == 100])
    torch.testing.assert_close(clip.time, states[roles == 200][0])
    assert clip.span == (0.0, 3.0)


def test_the_stream_perceives_each_clip_once_and_a_partial_tail_per_question(frames, make):
    model = make()
    step = model.add_frames(frames, times(10))
    assert step.counts == {
        "frames_encoded": 10,
        "visual_tokens_in": 40,
        "visual_tokens_kept": 40,
        "clips_perceived": 2,
    }
    first = model.answer(QUERY)
    assert (first.counts["clips_reused"], first.counts["clips_perceived"], first.counts["clips"]) == (2, 1, 3)
    again = model.answer(QUERY)
    assert again.text == first.text and again.counts["clips_perceived"] == 1
    # 3 clips retrieved (fewer than 4): each its 16 or 8 CLIP tokens and 4 or 2 slots, then 3 global tokens
    assert first.counts["reaction_visual_tokens"] == (16 + 4) * 2 + (8 + 2) + 3


def test_stream_answers_do_not_depend_on_how_frames_are_batched(frames, make):
    whole = make(STC)
    whole.add_frames(frames, times(10))
    text = whole.answer(QUERY).text
    whole.cacher.detach()  # one cacher per tower
    whole.cacher = None
    batched = make(STC)
    for start in range(0, 10, 3):
        batched.add_frames(frames[start : start + 3], times(10)[start : start + 3])
    for a, b in zip(whole.perception.stored, batched.perception.stored, strict=True):
        torch.testing.assert_close(a.memory, b.memory)
        assert torch.equal(a.kept, b.kept)
    assert batched.answer(QUERY).text == text


def test_parity_rebuilds_uniform_clips_per_question_from_the_frames_held(frames, make):
    model = make(protocol="dispider-parity")
    assert model.add_frames(frames, times(10)).counts == {}  # nothing is encoded before the question
    answer = model.answer(QUERY)
    # 10 s at 1 fps: round(10 / 4) = 2 clips of 4 frames, get_seq_frames(10, 8)
    picked = sample_indices(10, 8)
    assert picked == [0, 1, 2, 3, 5, 6, 7, 8]  # segment 9/8: ends 0, 1, 2, 3, 4.5 -> 4, 6, 7, 8, 9
    assert answer.frame_times == tuple(float(i) for i in picked)
    assert (answer.counts["frames_encoded"], answer.counts["clips"]) == (8, 2)
    stored = model.perception.stored
    assert [clip.span for clip in stored] == [(0.0, 3.0), (5.0, 8.0)]
    torch.testing.assert_close(stored[1].tokens, stock_tokens(model.net, frames[[5, 6, 7, 8]]))
    assert model.answer(QUERY).text == answer.text  # rebuilt afresh: the same clips, the same answer


def test_the_cacher_runs_one_frame_per_chunk_cls_included_across_clip_boundaries(net, frames, make):
    stock = stock_tokens(net, frames[:6])  # before the cacher is attached
    model = make(replace(STC, pruner=False))
    model.add_frames(frames[:5], times(5))
    # frames 0 and 4 are references (interval 4): frame 4, the first of clip 2, ran stock
    assert all(selected is None for selected in model.cacher.selected)
    model.add_frames(frames[5:6], times(6)[5:])
    # frame 5 is selective: int(17 * 0.25) = 4 of the 17 tokens (16 patches + CLS) per layer
    assert [tuple(s.shape) for s in model.cacher.selected] == [(1, 4)] * 3
    first = model.perception.stored[0].tokens
    torch.testing.assert_close(first[0], stock[0])  # frame 0: the reference, stock
    assert not any(torch.allclose(first[i], stock[i]) for i in (1, 2, 3))  # 1-3 selective
    assert not torch.allclose(model.perception.pending[1][0], stock[5])  # frame 5 reuses frame 4's work
    torch.testing.assert_close(model.perception.pending[0][0], stock[4])  # frame 4: a fresh reference
    model.reset()
    model.add_frames(frames[5:6], (0.0,))
    assert all(selected is None for selected in model.cacher.selected)  # a new video starts on a reference
    model.cacher.detach()
    model.cacher = None
    # interval 3: frame 3 (the last of clip 1) is the reference of frame 4, the first of clip 2
    carried = make(replace(STC, pruner=False, cache_interval=3))
    carried.add_frames(frames[:5], times(5))
    assert [tuple(s.shape) for s in carried.cacher.selected] == [(1, 4)] * 3
    torch.testing.assert_close(carried.perception.stored[0].tokens[3], stock[3])
    assert not torch.allclose(carried.perception.pending[0][0], stock[4])


def test_the_pruner_state_runs_in_stream_order_and_the_reaction_reads_the_kept_tokens(net, frames, make):
    model = make(replace(STC, cacher=False))
    step = model.add_frames(frames[:8], times(8))
    assert (step.counts["visual_tokens_in"], step.counts["visual_tokens_kept"]) == (32, 16)
    pruner, stock = STCPruner(2), stock_tokens(net, frames[:8])
    expected = torch.cat([pruner.compress(stock[i : i + 1])[1] for i in range(8)])  # one frame per call
    assert torch.equal(torch.cat([clip.kept for clip in model.perception.stored]), expected)
    clip = model.perception.stored[1]
    want = torch.stack([stock[4 + f, clip.kept[f]] for f in range(4)]).reshape(8, 128)
    torch.testing.assert_close(clip.reaction_tokens(), want)
    # slots and memory come from the full grid: the same as without the pruner
    plain = make()
    plain.add_frames(frames[:8], times(8))
    torch.testing.assert_close(plain.perception.stored[1].memory, clip.memory)


def test_answers_decode_greedily_as_full_forwards_do(net, frames, make):
    model = make(max_new_tokens=4)
    model.add_frames(frames, times(10))
    clips = model.perception.clips(Step())
    selected, state = model.query_state(clips, QUERY.prompt, Step())
    from stc_cli.models.dispider_glue import reaction_prompt

    before, after = reaction_prompt(QUERY.prompt)
    embeds = torch.cat(
        [model._embed(before), model.reaction_tokens(clips, selected, state["global"]), model._embed(after)]
    )
    tokens = []
    for _ in range(4):
        logits = net.reaction(inputs_embeds=embeds[None]).logits[0, -1]
        tokens.append(int(logits.argmax()))
        embeds = torch.cat([embeds, net.reaction.model.embed_tokens(torch.tensor(tokens[-1:]))])
    expected = tokens[: next((i for i, t in enumerate(tokens) if t in model.stop_ids), 4)]
    assert model.answer(QUERY).text == net.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_the_proactive_loop_triggers_where_the_silent_logit_is_positive(net, frames, make):
    model = make()
    model.add_frames(frames[:8], times(8))
    triggers, logits = model.decide("What colour?")
    assert len(logits) == 2 and triggers == [i + 1 for i, logit in enumerate(logits) if logit > 0]
    weight = net.silent.weight.detach().clone()
    try:
        with torch.no_grad():
            net.silent.weight.zero_()  # a logit of 0 is not above the threshold
        assert model.decide("What colour?") == ([], [0.0, 0.0])
    finally:
        with torch.no_grad():
            net.silent.weight.copy_(weight)


@pytest.mark.parametrize("sign", [1.0, -1.0, 0.0])
def test_the_runner_s_hook_decides_at_clip_boundaries_as_the_loop_does(net, frames, make, sign):
    assert not make(protocol="dispider-stream").proactive  # the runner never asks it
    model = Dispider(net, NO_STC, resolve("dispider", "ovo", "dispider-proactive"))
    assert model.proactive
    weight = net.silent.weight.detach().clone()
    try:
        with torch.no_grad():
            net.silent.weight.mul_(sign)  # 0: never above the threshold
        heard = []
        for i in range(8):
            model.add_frames(frames[i : i + 1], times(8)[i : i + 1])
            heard.append(model.wants_to_answer(QUERY))
            assert model.wants_to_answer(QUERY) == heard[-1]  # asking again changes nothing
        triggers, logits = model.decide(QUERY.prompt)
    finally:
        with torch.no_grad():
            net.silent.weight.copy_(weight)
    # random:tiny's clips are 4 frames: decisions after frames 4 and 8 only, as the whole loop makes them
    assert heard == [False, False, False, 1 in triggers, False, False, False, 2 in triggers]
    assert model.loops[QUERY.prompt].logits == logits and (sign != 0 or triggers == [])
    model.reset()
    assert model.loops == {}


def test_dispider_s_stc_defaults_and_what_flags_change():
    stc = stc_settings(EvalConfig(), resolution=64)
    assert (stc.cache_interval, stc.update_ratio, stc.tokens_per_frame, stc.cacher, stc.pruner) == (
        4,
        0.25,
        20,
        True,
        True,
    )
    changed = stc_settings(EvalConfig(cache_interval=3, update_ratio=0.5, tokens_per_frame=8), 64)
    assert (changed.cache_interval, changed.update_ratio, changed.tokens_per_frame) == (3, 0.5, 8)
    cacher_only = stc_settings(EvalConfig(pruner=False), 64)
    assert (cacher_only.cacher, cacher_only.pruner) == (True, False)
    # a flag given at another model's default is kept: --cache-interval 2 is 2, not Dispider's 4
    explicit = stc_settings(EvalConfig(cache_interval=2, update_ratio=0.25), 64)
    assert (explicit.cache_interval, explicit.update_ratio) == (2, 0.25)


def test_what_the_model_refuses(net, make):
    with pytest.raises(ValueError, match="does not fit Dispider"):
        Dispider(net, NO_STC, resolve("streamforest", "demo"))
    with pytest.raises(ValueError, match="--compress tome does not run with --model dispider"):
        Dispider(net, replace(NO_STC, tome=True))
    with pytest.raises(ValueError, match="--tokens-per-frame must be between 1 and 4"):
        Dispider(net, replace(STC, cacher=False, tokens_per_frame=5))
    with pytest.raises(ValueError, match="no frames"):
        make().answer(QUERY)


def test_describe_records_sizes_cls_and_stc(make):
    described = make(STC).describe()
    assert (described["frames_per_clip"], described["resolution"], described["pool_num"]) == (4, 4, 1)
    assert (described["select_layer"], described["clips"], described["frame_size"]) == (-2, "video", [56, 56])
    assert described["stc"]["cache_interval"] == 4
    assert described["cls_token"] == "treated like any token by the cacher; dropped after the tower"
