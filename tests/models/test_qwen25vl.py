"""Qwen2.5-VL specifics on a tiny random model: frames against the hub image processor, the windowed tower
under the cacher, the random presets' widths. What Qwen2.5-VL shares with Qwen3-VL (the streamed cache
against the stock model, SimpleStream's prompt, positions and decoding, loading) is tested for both in
``test_qwen3vl.py``."""

import pytest
import torch

from stc_cli.models import qwen2vl, qwen3vl, qwen25vl
from stc_cli.models.base import STCSettings
from stc_cli.models.frames import CLIP_MEAN, CLIP_STD
from stc_cli.models.qwenvl_recent import RecentFrames
from stc_cli.protocols import resolve
from tests.models.test_qwen3vl import frames, query, small


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return qwen25vl.load("random:tiny")


def test_frames_equal_the_pil_image_processor_on_what_qwen_vl_utils_hands_it():
    """qwen-vl-utils resizes a clip's frames to multiples of 28 within Qwen2.5-VL's image bounds, so its
    image processor (Qwen2-VL's, CLIP normalisation) only normalises and patchifies them."""
    pytest.importorskip("PIL")
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        min_pixels=3136, max_pixels=12845056
    )  # the hub's preprocessor config
    assert qwen25vl.FRAMES.mean == CLIP_MEAN and qwen25vl.FRAMES.std == CLIP_STD
    for seed in range(2):
        frame = frames(1, seed, size=(280, 392))
        want = processor(images=[frame[0].numpy()], input_data_format="channels_last", return_tensors="pt")
        got, grid = qwen25vl.FRAMES(frame.expand(2, -1, -1, -1))
        assert torch.equal(grid, want["image_grid_thw"]) and grid.tolist() == [[1, 20, 28]]
        torch.testing.assert_close(got, want["pixel_values"], rtol=0, atol=1e-6)


@torch.inference_mode()
def test_the_cacher_at_update_ratio_one_leaves_the_windowed_tower_stock(tiny):
    """Every block recomputes every token at update_ratio 1.0: the stream's and SimpleStream's answers and
    logits are the stock tower's, windows and full-attention blocks alike."""
    video = frames(8)
    times = tuple(i / 2 for i in range(8))  # 4 chunks: 0 and 2 references, 1 and 3 selective
    logits = []
    for stc in (STCSettings(cacher=False, pruner=False), STCSettings(pruner=False, update_ratio=1.0)):
        protocol = resolve("qwen25vl", "demo", "qwenvl-stream")
        stream = qwen25vl.Qwen25VLStream(tiny, stc, small(qwen25vl.Qwen25VLStream), protocol)
        try:
            stream.add_frames(video, times)
            logits.append(
                stream.model.lm_head(stream._append(stream._token_ids(stream.question_text(query())))[0, -1])
            )
            if stream.cacher:  # chunk 3 ran selective: all 48 patches of its temporal patch chosen
                assert [tuple(s.shape) for s in stream.cacher.selected] == [(1, 48)] * 2
        finally:
            if stream.cacher:
                stream.cacher.detach()
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    answers = []
    for stc in (STCSettings(cacher=False, pruner=False), STCSettings(pruner=False, update_ratio=1.0)):
        recent = RecentFrames(tiny, stc, resolve("qwen25vl", "demo").override(max_new_tokens=4), "qwen25vl")
        try:
            recent.add_frames(frames(4, size=(30, 40)), (0.0, 1.0, 2.0, 3.0))
            answers.append(recent.answer(query()).text)
        finally:
            if recent.cacher:
                recent.cacher.detach()
    assert answers[0] == answers[1]


def test_the_stream_turns_follow_qwen25vl_s_chat_template(tiny):
    stream = qwen25vl.Qwen25VLStream(
        tiny, STCSettings(cacher=False, pruner=False), small(qwen25vl.Qwen25VLStream)
    )
    assert stream.protocol.name == "qwenvl-stream" and stream.segments == [
        len(stream._ids(stream.SYSTEM_PROMPT)[0])
    ]
    assert stream.SYSTEM_PROMPT == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert stream.describe()["stream"] == {
        "min_pixels": 4 * 784,
        "max_pixels": 16 * 784,
        "max_cache_tokens": None,
    }
    assert qwen25vl.Qwen25VLStream.default_settings().max_pixels == 768 * 28 * 28
    assert qwen3vl.Qwen3VLStream.default_settings().min_pixels == 128 * 32 * 32


def test_random_full_has_the_released_widths():
    config = qwen2vl.random_config(qwen25vl.ARCHITECTURE, "full")
    vision, text = config.vision_config, config.text_config
    assert (vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads) == (
        32,
        1280,
        3420,
        16,
    )
    assert (vision.window_size, list(vision.fullatt_block_indexes), vision.out_hidden_size) == (
        112, [7, 15, 23, 31], 3584
    )  # fmt: skip
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads, text.vocab_size) == (
        3584, 28, 4, 152064
    )  # fmt: skip
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    config = qwen2vl.random_config(qwen3vl.ARCHITECTURE, "full")
    vision, text = config.vision_config, config.text_config
    assert (vision.depth, vision.hidden_size, vision.patch_size, vision.out_hidden_size) == (
        27,
        1152,
        16,
        4096,
    )
    assert list(vision.deepstack_visual_indexes) == [8, 16, 24] and vision.num_position_embeddings == 2304
    assert (text.hidden_size, text.num_hidden_layers, text.head_dim, text.vocab_size) == (
        4096,
        36,
        128,
        151936,
    )
    assert text.rope_parameters == {
        "rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True,
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown preset random:huge; choose random:tiny or random:full"):
        qwen25vl.load("random:huge")


@pytest.mark.parametrize(
    ("name", "layers", "marks"),
    [
        ("qwen25vl-7b", 9, ("fullatt_block_indexes", [7])),
        ("qwen3vl-8b", 17, ("deepstack_visual_indexes", [8, 16])),
    ],
)
def test_random_towers_for_stc_bench_cut_their_depth_and_what_hangs_on_it(name, layers, marks):
    from stc_cli.models.presets import QWENVL_FRAME_SIZES, random_qwenvl_tower

    with torch.device("meta"):  # widths only: no weights
        tower = random_qwenvl_tower(name, layers, device="meta")
    assert len(tower.blocks) == layers and list(getattr(tower.config, marks[0])) == marks[1]
    height, width = QWENVL_FRAME_SIZES[name]
    assert (height * width) // (tower.config.patch_size * 2) ** 2 == {"qwen25vl-7b": 510, "qwen3vl-8b": 390}[
        name
    ]
