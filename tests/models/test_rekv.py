"""ReKV on a tiny random LLaVA-OneVision: against the stock transformers forward, STC wiring, resets,
and what each protocol gives it to read and how it decodes."""

import copy
from dataclasses import replace

import pytest
import torch

from stc_cli.accel import OpCensus
from stc_cli.benchmarks.base import Query
from stc_cli.compress import DifferentialTokenDrop, ToMe, VisionZip
from stc_cli.compress.visionzip import attention_stats
from stc_cli.models import llava_ov
from stc_cli.models.base import STCSettings
from stc_cli.models.rekv import CHAT_TURN, INIT_PROMPT, ReKV, ReKVSettings, texts
from stc_cli.models.rekv_lm import ReKVLanguageModel
from stc_cli.protocols import resolve

OFF = STCSettings(cacher=False, pruner=False)
SHORT = resolve("rekv", "ovo").override(max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny():
    return llava_ov.build_random("tiny")


def frames(count, seed=0, size=(40, 48)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *size, 3), dtype=torch.uint8, generator=generator)


def query(prompt="Which colour? A. red B. blue", options=("red", "blue")):
    return Query(
        id="q", bench="demo", task="t", category="c", video="v.mp4", window=(0.0, 9.0),
        prompt=prompt, options=options, target="A", extra={}, question="Which colour?",
    )  # fmt: skip


def stock_logits(llava, video, text):
    """The stock model over [init prompt ; video features without the newline token ; text]."""
    model, tokenizer = llava.model, llava.tokenizer
    pixels = llava.transform(video)[None]
    features = model.get_video_features(pixels).pooler_output[:, :-1]
    embed = model.model.language_model.embed_tokens

    def ids(s):
        return torch.tensor([tokenizer(s, add_special_tokens=False).input_ids], device=model.device)

    sequence = torch.cat((embed(ids(INIT_PROMPT)), features, embed(ids(text))), dim=1)
    hidden = model.model.language_model(inputs_embeds=sequence).last_hidden_state
    return model.lm_head(hidden[0, -1])


def rekv_logits(rekv, text):
    rekv.llm.retrieve(rekv._embed(query().prompt))
    logits = rekv.llm.extend(rekv._embed(text))
    rekv.llm.end_answer()
    return logits


@torch.inference_mode()
def test_retrieving_every_frame_within_the_window_equals_the_stock_forward(tiny):
    rekv = ReKV(tiny, OFF, ReKVSettings(n_local=4096, topk=64))
    video = frames(5)
    rekv.add_frames(video[:2], (0.0, 2.0))
    rekv.add_frames(video[2:], (4.0, 6.0, 8.0))
    text = CHAT_TURN.format(prompt=query().prompt)
    torch.testing.assert_close(rekv_logits(rekv, text), stock_logits(tiny, video, text), rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_retrieval_keeps_only_topk_frames_per_layer_and_overflow_offloads(tiny):
    init = len(tiny.tokenizer(INIT_PROMPT, add_special_tokens=False).input_ids)
    rekv = ReKV(tiny, OFF, ReKVSettings(n_local=init + 3 * 16, topk=2))
    rekv.add_frames(frames(6), tuple(range(6)))
    layer = rekv.llm.memory[0]
    assert layer.length == init + 6 * 16 and len(layer.blocks) == 6
    assert layer.local_k.shape[1] == init + 3 * 16  # the window slid past the init prompt
    assert all(block[0].device.type == "cpu" for block in layer.blocks)
    rekv.llm.retrieve(rekv._embed("a question"))
    assert [m.answer_k.shape[1] for m in rekv.llm.memory] == [init + 2 * 16] * len(rekv.llm.memory)
    assert len(set(tuple(m.choose(m.answer_k[:, :1].repeat(2, 1, 1), 2)) for m in rekv.llm.memory)) >= 1


@torch.inference_mode()
def test_stc_prunes_each_frame_to_one_block_of_k_tokens(tiny):
    rekv = ReKV(tiny, STCSettings(tokens_per_frame=5), ReKVSettings(n_local=4096))
    step = rekv.add_frames(frames(4), (0.0, 1.0, 2.0, 3.0))
    assert step.counts == {"frames_encoded": 4, "visual_tokens_in": 64, "visual_tokens_kept": 20}
    assert set(step.timings_ms) == {"vit", "compress", "prefill"}
    assert rekv.block == 5 and [b[0].shape[1] for b in rekv.llm.memory[0].blocks] == [5, 5, 5, 5]
    assert rekv.cacher is not None and rekv.cacher.selected  # the second frame was a selective chunk
    rekv.cacher.detach()


@torch.inference_mode()
def test_encode_chunk_gives_the_same_memory_as_one_frame_at_a_time(tiny):
    """Without STC, --encode-chunk only batches: each frame is still one block, attended as one sub-chunk."""
    one, chunked = (ReKV(tiny, OFF, ReKVSettings(n_local=40, encode_chunk=n)) for n in (1, 3))
    video = frames(7)
    for rekv in (one, chunked):
        rekv.add_frames(video[:5], tuple(range(5)))  # chunks of 3 and 2
        step = rekv.add_frames(video[5:], (5.0, 6.0))
        assert step.counts == {"frames_encoded": 2, "visual_tokens_in": 32, "visual_tokens_kept": 32}
    for a, b in zip(one.llm.memory, chunked.llm.memory, strict=True):
        assert len(a.blocks) == len(b.blocks) == 7
        torch.testing.assert_close(a.local_k, b.local_k, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            a.blocks.gather(list(range(7)), "cpu"), b.blocks.gather(list(range(7)), "cpu")
        )


@torch.inference_mode()
def test_encode_chunk_makes_a_chunk_of_frames_the_cacher_s_unit(tiny):
    rekv = ReKV(tiny, STCSettings(tokens_per_frame=5), ReKVSettings(encode_chunk=2))
    try:
        rekv.add_frames(frames(2), (0.0, 1.0))  # chunk 0: a reference chunk of 2 frames
        assert all(selected is None for selected in rekv.cacher.selected)
        rekv.add_frames(
            frames(3, seed=1), (2.0, 3.0, 4.0)
        )  # chunks 1 (2 frames, selective), 2 (1, reference)
        assert all(selected is None for selected in rekv.cacher.selected)
        rekv.add_frames(frames(2, seed=2), (5.0, 6.0))  # chunk 3: selective, 2 frames
        # in each layer, 12 of the tower's 49 tokens (7 x 7 patches) per frame: int(49 * 0.25)
        assert [tuple(selected.shape) for selected in rekv.cacher.selected] == [(2, 12)] * 3
    finally:
        rekv.cacher.detach()


@torch.inference_mode()
def test_dtd_keeps_the_first_frame_of_each_video_whole_and_the_budget_of_the_others(tiny):
    dtd = STCSettings(cacher=False, tokens_per_frame=5, pruner_method="dtd")
    rekv = ReKV(tiny, dtd, ReKVSettings(encode_chunk=2))
    step = rekv.add_frames(frames(4), (0.0, 1.0, 2.0, 3.0))
    assert step.counts == {"frames_encoded": 4, "visual_tokens_in": 64, "visual_tokens_kept": 16 + 3 * 5}
    assert rekv.block == 16 and rekv.describe()["tokens_per_frame"] == 5
    assert [b[0].shape[1] for b in rekv.llm.memory[0].blocks] == [16, 5, 5, 5]
    rekv.reset()
    rekv.add_frames(frames(2), (0.0, 1.0))
    assert [b[0].shape[1] for b in rekv.llm.memory[0].blocks] == [16, 5]


@torch.inference_mode()
def test_dtd_with_a_threshold_stores_what_it_keeps_and_no_block_for_a_repeated_frame(tiny):
    rekv = ReKV(tiny, STCSettings(cacher=False, tokens_per_frame=5, pruner_method="dtd", dtd_threshold=0.5))
    video = frames(3)
    video = torch.cat((video[:2], video[1:2], video[2:]))  # frame 2 repeats frame 1: every cosine is 1
    features = tiny.frame_features(video)
    expected = [len(idx) for idx in DifferentialTokenDrop(0.5).select(features)]
    assert expected[0] == 16 and expected[2] == 0 and 0 < expected[1] and 0 < expected[3]
    step = rekv.add_frames(video, (0.0, 1.0, 2.0, 3.0))
    assert step.counts["visual_tokens_kept"] == sum(expected)
    assert [b[0].shape[1] for b in rekv.llm.memory[0].blocks] == [n for n in expected if n]


@torch.inference_mode()
def test_reset_forgets_the_video_and_the_stc_state(tiny):
    first = ReKV(tiny, STCSettings(tokens_per_frame=8))
    first.add_frames(frames(3, seed=1), (0.0, 1.0, 2.0))
    first.reset()
    first.add_frames(frames(3), (0.0, 1.0, 2.0))
    answer = first.answer(query())
    first.cacher.detach()
    fresh = ReKV(tiny, STCSettings(tokens_per_frame=8))
    fresh.add_frames(frames(3), (0.0, 1.0, 2.0))
    assert fresh.answer(query()).text == answer.text
    torch.testing.assert_close(first.llm.memory[1].local_k, fresh.llm.memory[1].local_k, rtol=0, atol=0)
    fresh.cacher.detach()


@torch.inference_mode()
def test_answers_do_not_change_the_memory_and_count_their_tokens(tiny):
    rekv = ReKV(tiny, OFF, protocol=SHORT)
    rekv.add_frames(frames(2), (0.0, 1.0))
    first, second = rekv.answer(query()), rekv.answer(query())
    assert first.text == second.text
    assert 1 <= first.counts["new_tokens"] <= 4 and set(first.timings_ms) == {"answer"}
    assert all(m.answer_k is None for m in rekv.llm.memory)


def test_tokens_per_frame_beyond_the_pooled_grid_is_refused(tiny):
    with pytest.raises(ValueError, match="--tokens-per-frame must be between 1 and 16, got 17"):
        ReKV(tiny, STCSettings(cacher=False, tokens_per_frame=17))


def test_describe_lists_the_knobs(tiny):
    described = ReKV(tiny, STCSettings(cacher=False, tokens_per_frame=8)).describe()
    assert described["model_path"] == "random:tiny" and described["tokens_per_frame"] == 8
    assert described["stc"]["pruner"] is True and described["rekv"]["topk"] == 64


@torch.inference_mode()
def test_a_saved_checkpoint_folder_loads_through_model_path(tiny, tmp_path):
    """The path a downloaded checkpoint takes: weights, config, tokenizer, preprocessing config."""
    llava_ov.save(tiny, tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = llava_ov.load(str(tmp_path))
    assert loaded.transform == tiny.transform and loaded.source == str(tmp_path)
    assert loaded.tokenizer("<|im_start|>hi").input_ids == tiny.tokenizer("<|im_start|>hi").input_ids
    answers = []
    for llava in (tiny, loaded):
        rekv = ReKV(llava, OFF, protocol=SHORT.override(max_new_tokens=6))
        rekv.add_frames(frames(3), (0.0, 1.0, 2.0))
        answers.append(rekv.answer(query()).text)
    assert answers[0] == answers[1]


def test_the_saved_preprocessing_config_is_the_hub_processors(tiny, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    tiny.transform.save_pretrained(tmp_path)
    processor = transformers.LlavaOnevisionImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"height": 56, "width": 56} and processor.resample == 3
    assert list(processor.image_mean) == list(tiny.transform.mean)


def test_a_missing_folder_is_named():
    with pytest.raises(ValueError, match="--model-path /no/such/checkpoint: no such folder"):
        llava_ov.load("/no/such/checkpoint")


def test_an_unreachable_model_path_says_what_to_pass():
    with pytest.raises(ValueError, match="--model-path 'nobody/nothing' is neither a folder nor a reachable"):
        llava_ov.load("nobody/nothing")


@pytest.mark.gpu
@torch.inference_mode()
def test_on_cuda_retrieval_of_every_frame_equals_the_stock_forward():
    llava = llava_ov.build_random("tiny", device="cuda")
    rekv = ReKV(llava, OFF, ReKVSettings(n_local=4096))
    video = frames(4)
    rekv.add_frames(video, (0.0, 1.0, 2.0, 3.0))
    text = CHAT_TURN.format(prompt=query().prompt)
    stock = stock_logits(llava, video.cuda(), text)
    torch.testing.assert_close(rekv_logits(rekv, text), stock.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.float16, 3e-2)])
@torch.inference_mode()
def test_on_cuda_the_window_overflow_and_partial_retrieval_match_the_cpu(tiny, dtype, tolerance):
    """The sink path (init tokens outside the window) and retrieval of 2 of 6 frames, on CUDA, against
    the same weights on the CPU in float32. The frames come at the tower's size: resizing rounds
    differently on a GPU (float path) than on the CPU (uint8 path), which on the H200 alone moved the
    float32 logits by 8.5e-4."""
    gpu = copy.deepcopy(tiny)
    gpu.model.to("cuda", dtype)
    init = len(tiny.tokenizer(INIT_PROMPT, add_special_tokens=False).input_ids)
    settings = ReKVSettings(n_local=init + 3 * 16, topk=2)
    text = CHAT_TURN.format(prompt=query().prompt)
    logits = []
    for llava in (tiny, gpu):
        rekv = ReKV(llava, OFF, settings)
        rekv.add_frames(frames(6, size=tiny.transform.size), tuple(range(6)))
        assert len(rekv.llm.memory[0].blocks) == 6 > settings.topk
        logits.append(rekv_logits(rekv, text).float().cpu())
    torch.testing.assert_close(logits[1], logits[0], rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
@torch.inference_mode()
def test_on_cuda_in_float16_stc_answers(tmp_path):
    llava = llava_ov.build_random("tiny", device="cuda", dtype=torch.float16)
    rekv = ReKV(llava, STCSettings(tokens_per_frame=8), protocol=SHORT)
    step = rekv.add_frames(frames(4), (0.0, 1.0, 2.0, 3.0))
    assert step.counts["visual_tokens_kept"] == 32
    assert 1 <= rekv.answer(query()).counts["new_tokens"] <= 4


@pytest.mark.gpu
@torch.inference_mode()
def test_on_cuda_graphs_change_no_logit_and_the_ring_window_little():
    """Two videos through ReKV with STC on CUDA: replayed from CUDA graphs (the tower, and each frame's
    prefill through the ring window, each decoding step) or run eagerly on the same ring, or on the
    growing window."""
    logits, answers = {}, {}
    for run in ("replayed", "eager ring", "growing window"):
        llava = llava_ov.build_random("tiny", device="cuda", dtype=torch.float16)
        settings = ReKVSettings(llm_graphs=run != "growing window")
        rekv = ReKV(llava, STCSettings(tokens_per_frame=8), settings, protocol=SHORT)
        if run == "eager ring":
            rekv.tower, rekv.llm.graphs = llava.run_tower, None
        for video in range(2):
            rekv.reset()
            rekv.add_frames(frames(8), tuple(range(8)))
            logits[run, video] = rekv_logits(rekv, CHAT_TURN.format(prompt=query().prompt))
            answers[run, video] = rekv.answer(query()).text  # its decoding steps replayed too
        if run == "replayed":
            # eager: chunk 0, and the selective chunks 1 and 3 (the first reads chunk 0's references,
            # the second is the first to read those of the recorded chunk 2); the rest replay
            assert rekv.tower.graphs == 2 and rekv.tower.replays == 16 - 3
            # the prefill: the first frame eager, then one graph for every 8-token frame (and one for
            # decoding, once an answer has taken two single-token steps)
            assert rekv.llm.graphs.replays >= 16 - 1
    for video in range(2):
        torch.testing.assert_close(logits["replayed", video], logits["eager ring", video], rtol=0, atol=0)
        assert answers["replayed", video] == answers["eager ring", video]
        torch.testing.assert_close(
            logits["replayed", video], logits["growing window", video], rtol=3e-2, atol=3e-2
        )


@torch.inference_mode()
def test_max_blocks_bounds_what_a_long_stream_holds(tiny):
    """--max-blocks 3 and a window of two frames: past three frames, every layer holds three blocks
    and a full window, and the memory's bytes stop growing; a question retrieves among those blocks."""
    init = len(tiny.tokenizer(INIT_PROMPT, add_special_tokens=False).input_ids)
    rekv = ReKV(tiny, OFF, ReKVSettings(n_local=init + 2 * 16, topk=2, max_blocks=3))
    held = []
    for second in range(8):
        rekv.add_frames(frames(1, seed=second), (float(second),))
        held.append(rekv.llm.nbytes())
    assert all(len(m.blocks) == 3 and m.blocks.dropped == 5 for m in rekv.llm.memory)
    assert held[2:] == [held[2]] * 6 and held[0] < held[1] < held[2]
    assert rekv.describe()["rekv"]["max_blocks"] == 3
    rekv_logits(rekv, CHAT_TURN.format(prompt=query().prompt))


@torch.inference_mode()
def test_the_ring_window_gives_the_logits_of_the_growing_window(tiny):
    """The fixed buffers a CUDA graph replays (on a CPU they run eagerly), past the window's end, with
    retrieval of 2 of 6 frames, and three decoding steps: the logits of the growing window."""
    init = len(tiny.tokenizer(INIT_PROMPT, add_special_tokens=False).input_ids)
    logits = []
    for ring in (False, True):
        rekv = ReKV(tiny, OFF, ReKVSettings(n_local=init + 3 * 16, topk=2))
        lm = tiny.model.model.language_model
        rekv.llm = ReKVLanguageModel(
            lm, tiny.model.lm_head, n_local=init + 3 * 16, block=16, topk=2, cuda_graphs=ring
        )
        rekv.reset()
        rekv.add_frames(frames(6), tuple(range(6)))
        assert (rekv.llm.memory[0].ring is not None) == ring and len(rekv.llm.memory[0].blocks) == 6
        rekv.llm.retrieve(rekv._embed(query().prompt), room=64)
        steps = [rekv.llm.extend(rekv._embed(CHAT_TURN.format(prompt=query().prompt)))]
        for token in (5, 17, 3):  # generated tokens, one at a time: what a decoding graph replays
            steps.append(rekv.llm.extend(rekv.lm.embed_tokens(rekv._ids([token]))))
        rekv.llm.end_answer()
        logits.append(torch.stack(steps))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_no_step_a_cuda_graph_records_makes_the_host_wait():
    """Each frame's prefill through the ring window, before and after the window is full, and each
    decoding step run no operator whose result the host must read (a CUDA graph cannot record one); nor
    does a whole frame of ReKV with STC on (the ViT, both STC parts and the prefill), so that on a GPU the
    host runs ahead of the device."""
    tiny = llava_ov.build_random("tiny")  # its own: STC-Cacher stays attached to its tower
    init = len(tiny.tokenizer(INIT_PROMPT, add_special_tokens=False).input_ids)
    rekv = ReKV(tiny, STCSettings(tokens_per_frame=8), ReKVSettings(n_local=init + 2 * 8, topk=2))
    lm = tiny.model.model.language_model
    rekv.llm = ReKVLanguageModel(
        lm, tiny.model.lm_head, n_local=init + 2 * 8, block=8, topk=2, cuda_graphs=True
    )
    rekv.reset()
    for second in range(5):  # the init prompt slides out of the window at the third frame
        with OpCensus() as census:
            rekv.add_frames(frames(1, seed=second), (float(second),))
        assert census.total_launches > 0 and census.host_syncs == {}, second
    rekv.llm.retrieve(rekv._embed(query().prompt), room=8)
    rekv.llm.extend(rekv._embed("Answer:"))
    for token in (5, 17):
        embedded = rekv.lm.embed_tokens(rekv._ids([token]))  # the token's id comes from the host
        with OpCensus() as census:
            rekv.llm.extend(embedded)
        assert census.total_launches > 0 and census.host_syncs == {}, token


# -- what each protocol gives ReKV to read, and how it decodes ---------------------------------------


@pytest.mark.parametrize(
    ("bench", "name", "retrieval", "prefill"),
    [
        # STC's online harness: the benchmark prompt as a plain string, for retrieval and prefill alike
        ("ovo", "stc-online", "Which colour? A. red B. blue", "Which colour? A. red B. blue"),
        # stc's earlier chat turn, "Best option: (" for multiple choice
        (
            "ovo",
            "rekv-chat",
            "Which colour? A. red B. blue",
            "\nWhich colour? A. red B. blue<|im_end|><|im_start|>assistant\nBest option: (",
        ),
        # STC's offline runner: the bare question retrieves; get_prompt(mc=True) wraps the prompt
        (
            "mlvu",
            "stc-offline",
            "Which colour?",
            "\nWhich colour? A. red B. blue<|im_end|><|im_start|>assistant\nBest option: (",
        ),
    ],
)
def test_each_protocol_retrieves_and_prefills_its_own_text(bench, name, retrieval, prefill):
    assert texts(resolve("rekv", bench, name), query()) == (retrieval, prefill)


def test_an_open_question_gets_no_choice_prefill_and_a_missing_question_is_named():
    offline = resolve("rekv", "mlvu")
    open_question = "\nWhich colour? A. red B. blue<|im_end|><|im_start|>assistant\n"
    assert texts(offline, query(options=()))[1] == open_question
    with pytest.raises(ValueError, match="q has no bare question to retrieve frames with"):
        texts(offline, replace(query(), question=""))


def test_a_livecc_protocol_does_not_fit_rekv(tiny):
    with pytest.raises(ValueError, match="protocol livecc-ovo \\(livecc\\) does not fit ReKV"):
        ReKV(tiny, OFF, protocol=resolve("livecc", "ovo"))


@pytest.fixture(scope="module")
def qwen2_eos():
    """The tiny model with a tokenizer whose eos is <|endoftext|>, as in Qwen2 base tokenizers, so that
    the end of turn <|im_end|> is not the eos."""
    llava = llava_ov.build_random("tiny")
    llava.tokenizer.eos_token = "<|endoftext|>"
    return llava


def scripted(rekv, steps):
    """Make ReKV's LLM return logits whose best two tokens are ``steps[i]`` at decoding step i."""
    vocab = rekv.lm.embed_tokens.num_embeddings
    ids = iter([[rekv.llava.tokenizer.convert_tokens_to_ids(t) for t in pair] for pair in steps])

    def extend(_embeds):
        logits = torch.zeros(vocab)
        best, second = next(ids)
        logits[best], logits[second] = 2.0, 1.0
        return logits

    rekv.llm.extend = extend


@pytest.mark.parametrize(
    ("name", "steps", "text", "new_tokens"),
    [
        # eos only: <|im_end|> does not stop and is dropped from the text; <|endoftext|> stops
        (
            "stc-online",
            [("<|im_end|>", "B"), ("A", "B"), ("<|im_end|>", "B"), ("<|endoftext|>", "B")],
            "A",
            3,
        ),
        # an eos first gives way to the second best
        ("stc-online", [("<|endoftext|>", "C"), ("<|endoftext|>", "A")], "C", 1),
        # eos and <|im_end|> stop; a first <|im_end|> gives way to the second best
        ("rekv-chat", [("<|im_end|>", "B"), ("A", "C"), ("<|im_end|>", "C")], "BA", 2),
    ],
)
@torch.inference_mode()
def test_the_stop_set_and_the_first_token_rule(qwen2_eos, name, steps, text, new_tokens):
    rekv = ReKV(qwen2_eos, OFF, protocol=resolve("rekv", "ovo", name))
    scripted(rekv, steps)
    answer = rekv.answer(query())
    assert (answer.text, answer.counts["new_tokens"]) == (text, new_tokens)


@torch.inference_mode()
def test_decoding_stops_at_max_new_tokens_and_cleans_up_as_transformers_4_did(tiny):
    rekv = ReKV(tiny, OFF, protocol=resolve("rekv", "ovo").override(max_new_tokens=3))
    scripted(rekv, [("A", "B"), ("Ġ", "B"), (".", "B"), ("C", "B")])  # "Ġ" is the byte-level space
    assert rekv.answer(query()).text == "A."  # "A ." with the space before the full stop removed
    chat = ReKV(tiny, OFF, protocol=resolve("rekv", "ovo", "rekv-chat").override(max_new_tokens=3))
    scripted(chat, [("A", "B"), ("Ġ", "B"), (".", "B")])
    assert chat.answer(query()).text == "A ."


@torch.inference_mode()
def test_the_answer_records_its_texts(tiny):
    rekv = ReKV(tiny, OFF, protocol=resolve("rekv", "mlvu").override(max_new_tokens=2))
    answer = rekv.answer(query())
    assert answer.retrieval_input == "Which colour?"
    assert answer.model_input.endswith("<|im_start|>assistant\nBest option: (")


@pytest.mark.parametrize(("memory", "kept"), [("video", 1), ("process", 3)])
@torch.inference_mode()
def test_the_pruner_memory_starts_afresh_per_video_unless_kept_for_the_process(tiny, memory, kept):
    rekv = ReKV(tiny, STCSettings(cacher=False, tokens_per_frame=8, pruner_memory=memory))
    rekv.add_frames(frames(2), (0.0, 1.0))
    rekv.reset()
    rekv.add_frames(frames(1, seed=3), (0.0,))
    assert len(rekv.pruner.history) == kept  # one chunk mean per frame since the memory last started


@torch.inference_mode()
def test_tome_merges_in_the_tower_to_stc_s_share_and_the_llm_still_gets_every_pooled_token(tiny):
    # random:tiny: 7 x 7 = 49 patches, 3 layers, 16 pooled tokens; 5 of 16 -> round(49 * 5 / 16) = 15 left
    rekv = ReKV(tiny, STCSettings(cacher=False, pruner=False, tokens_per_frame=5, tome=True))
    try:
        assert rekv.tome.r == ToMe.schedule(49, 3, 15) and rekv.describe()["tome_r"] == rekv.tome.r
        step = rekv.add_frames(frames(2), (0.0, 1.0))
        assert rekv.tome.tokens[-1] == 15 and step.counts["visual_tokens_kept"] == 32
        assert [b[0].shape[1] for b in rekv.llm.memory[0].blocks] == [16, 16]
    finally:
        rekv.tome.detach()
    with pytest.raises(ValueError, match="--tokens-per-frame must be between 1 and 16, got 17"):
        ReKV(tiny, STCSettings(cacher=False, pruner=False, tokens_per_frame=17, tome=True))


@torch.inference_mode()
def test_visionzip_keeps_the_budget_of_pooled_tokens_scored_at_the_feature_layer(tiny):
    rekv = ReKV(tiny, STCSettings(cacher=False, tokens_per_frame=5, pruner_method="visionzip"))
    video = frames(3)
    states = tiny.tower_states(video)
    expected = VisionZip.at_budget(5).compress(tiny.project(states), *tiny.feature_attention(states))
    rekv.add_frames(video, (0.0, 1.0, 2.0))
    layer = rekv.llm.memory[0]
    assert [b[0].shape[1] for b in layer.blocks] == [5, 5, 5]  # 4 dominant + 1 contextual
    # the first layer's keys of block 0 come from the LLM's k_proj of exactly those 5 tokens
    lm_layer = rekv.lm.layers[0]
    keys = lm_layer.self_attn.k_proj(lm_layer.input_layernorm(expected[0]))
    torch.testing.assert_close(
        layer.blocks[0][0], keys.view(5, layer.blocks[0][0].shape[0], -1).transpose(0, 1)
    )


@torch.inference_mode()
def test_feature_attention_scores_the_pooled_tokens_from_the_last_layer(tiny):
    states = tiny.tower_states(frames(2))
    scores, metric = tiny.feature_attention(states)
    assert scores.shape == (2, 16) and metric.shape == (2, 16, 8)  # 2 heads of 8 in the tiny tower
    tower = tiny.model.model.vision_tower
    raw, raw_metric = attention_stats(tower.encoder.layers[-1], states[-2])  # the last layer's input
    pool = tiny.model.model.apply_pooling
    torch.testing.assert_close(scores, pool(raw[..., None])[..., 0])
    torch.testing.assert_close(metric, pool(raw_metric))
    torch.testing.assert_close(raw.sum(dim=1), torch.ones(2))  # attention received: a mean of softmax rows
