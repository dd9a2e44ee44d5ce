import json
import re

import pytest
import torch
import torch.nn.functional as F

from stc_cli.models.frames import CLIP_MEAN, CLIP_STD
from stc_cli.models.qwen2vl_frames import Qwen2VLFrames, smart_resize

LIVECC_MAX = 384 * 28 * 28  # LiveCC demo max_pixels
EVAL_MIN = 100 * 28 * 28  # livecc_utils VIDEO_MIN_PIXELS
HUB_MIN, HUB_MAX = 3136, 12845056  # Qwen2-VL-7B-Instruct's (and LiveCC's) preprocessor_config.json
RAW = dict(mean=(0.0,) * 3, std=(1.0,) * 3, rescale_factor=1.0)  # pixel values = the uint8 values


def noise_frames(n, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=gen)


def smooth_frames(n, h, w, seed=0):
    """Noise upsampled 8x bilinearly: closer to video than white noise."""
    gen = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, h // 8, w // 8, generator=gen) * 255, size=(h, w), mode="bilinear")
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize(
    ("args", "want"),
    [
        # 16:9 under LiveCC's cap: rounds to 476x840 (854 / 28 = 30.5 ties to the even 30) = 399840 px, too
        # many; beta = sqrt(480 * 854 / 301056) = 1.1669 -> floor(14.69) * 28 x floor(26.14) * 28.
        ((480, 854, 28, 3136, LIVECC_MAX), (392, 728)),
        ((480, 854, 28, EVAL_MIN, LIVECC_MAX), (392, 728)),
        # Scaled up to min_pixels: 56x56 = 3136 < 78400, beta = sqrt(78400 / 3136) = 5 -> 10 * 28 per side.
        ((56, 56, 28, EVAL_MIN, LIVECC_MAX), (280, 280)),
        # 84x112 = 9408 < 156800: beta = 3.8103 -> ceil(12.25) * 28 x ceil(16.33) * 28 (over the minimum).
        ((90, 120, 28, 200 * 28 * 28, LIVECC_MAX), (364, 476)),
        # Python's round: 70 / 28 = 2.5 -> 2, 98 / 28 = 3.5 -> 4; within the default bounds, so kept.
        ((70, 70), (56, 56)),
        ((98, 98), (112, 112)),
        # Aspect ratio exactly 200 is allowed; when shrinking, a side never goes below one factor.
        ((28, 5600), (28, 5600)),
        ((28, 5600, 28, 3136, 100 * 28 * 28), (28, 3948)),
        ((100, 100, 32, 64 * 64, 96 * 96), (96, 96)),  # another factor
    ],
)
def test_smart_resize_hand_worked(args, want):
    assert smart_resize(*args) == want


def test_smart_resize_errors():
    with pytest.raises(ValueError, match=r"^absolute aspect ratio must be smaller than 200, got 200\.0357"):
        smart_resize(28, 5601)
    with pytest.raises(ValueError, match="^absolute aspect ratio must be smaller than 200, got 1000.0"):
        smart_resize(1000, 1)
    with pytest.raises(ValueError, match="frame size must be positive, got 0x10"):
        smart_resize(0, 10)


def test_smart_resize_matches_transformers_on_a_grid():
    # Upstream's copy in the PIL image processor module (the torchvision modules need torchvision).
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hub

    sides = [1, 13, 14, 27, 28, 41, 42, 70, 97, 144, 240, 360, 480, 541, 720, 854, 1080, 1920, 3840]
    bounds = [(56 * 56, 28 * 28 * 1280), (EVAL_MIN, LIVECC_MAX), (128 * 784, 768 * 784), (HUB_MIN, HUB_MAX)]
    checked = 0
    for min_pixels, max_pixels in bounds:
        for h in sides:
            for w in sides:
                try:
                    want = hub(h, w, 28, min_pixels, max_pixels)
                except ValueError as err:
                    with pytest.raises(ValueError, match=f"^{re.escape(str(err))}$"):
                        smart_resize(h, w, 28, min_pixels, max_pixels)
                    continue
                assert smart_resize(h, w, 28, min_pixels, max_pixels) == want, (h, w, min_pixels, max_pixels)
                checked += 1
    assert checked > 1200  # most of the 1444 cases resize; the rest raise the aspect-ratio error


def test_patch_order_is_merge_windows_then_channel_frame_row_column():
    frames = noise_frames(4, 56, 84)  # 2 temporal patches of 2 different frames; grid 4x6 patches
    pixel_values, grid = Qwen2VLFrames(min_pixels=56 * 56, **RAW)(frames)
    assert grid.tolist() == [[2, 4, 6]] and grid.dtype == torch.long
    assert pixel_values.shape == (2 * 4 * 6, 3 * 2 * 14 * 14) and pixel_values.dtype == torch.float32
    # The documented order, written out: t, merge-window row, merge-window column, row and column within
    # the 2x2 window; each row holds channel, frame within the temporal patch, patch row, patch column.
    rows = []
    for t in range(2):
        for wy in range(2):
            for wx in range(3):
                for my in range(2):
                    for mx in range(2):
                        y, x = (2 * wy + my) * 14, (2 * wx + mx) * 14
                        rows.append(
                            torch.stack(
                                [
                                    frames[2 * t + k, y : y + 14, x : x + 14, c]
                                    for c in range(3)
                                    for k in range(2)
                                ]
                            ).flatten()
                        )
    assert torch.equal(pixel_values, torch.stack(rows).float())


def test_chunks_of_a_stream_concatenate_to_the_whole_video():
    frames = smooth_frames(6, 120, 208, seed=3)
    transform = Qwen2VLFrames(min_pixels=EVAL_MIN, max_pixels=LIVECC_MAX)
    size = transform.size_for(120, 208)
    assert size == (224, 392)  # 112x196 = 21952 px < 78400: scaled up, then the grid is fixed for the video
    whole, grid = transform(frames)
    chunks = [transform(frames[i : i + 2], size=size) for i in range(0, 6, 2)]
    assert grid.tolist() == [[3, 16, 28]] and all(g.tolist() == [[1, 16, 28]] for _, g in chunks)
    assert torch.equal(whole, torch.cat([pv for pv, _ in chunks]))


def test_odd_frame_count_refused_unless_pad_repeats_the_last_frame():
    frames = noise_frames(3, 56, 56)
    transform = Qwen2VLFrames(min_pixels=56 * 56)
    with pytest.raises(ValueError, match="got 3 frames, need a multiple of temporal_patch_size=2"):
        transform(frames)
    padded, grid = transform(frames, pad=True)
    assert grid.tolist() == [[2, 4, 4]]
    assert torch.equal(padded, transform(torch.cat([frames, frames[-1:]]))[0])
    assert transform(frames[:1], pad=True)[1].tolist() == [[1, 4, 4]]


def test_normalisation_by_hand_without_resize():
    frames = torch.zeros(2, 28, 28, 3, dtype=torch.uint8)
    frames[0, 0, 0] = torch.tensor([0, 255, 128])
    pixel_values, grid = Qwen2VLFrames(min_pixels=28 * 28)(frames)
    assert grid.tolist() == [[1, 2, 2]]
    # Row 0, columns c * 392 (frame 0, pixel 0 of channel c): (v / 255 - mean) / std by hand.
    want = torch.tensor([-1.79226253, 2.07488384, 0.33994864])
    torch.testing.assert_close(pixel_values[0, ::392], want, rtol=0, atol=1e-6)


def test_dtype_device_size_and_bad_input():
    transform = Qwen2VLFrames(min_pixels=56 * 56)
    pixel_values, grid = transform(noise_frames(2, 60, 60), dtype=torch.bfloat16, device="cpu")
    assert (
        pixel_values.dtype == torch.bfloat16
        and pixel_values.shape == (16, 1176)
        and grid.device.type == "cpu"
    )
    assert transform(noise_frames(2, 60, 60), size=(28, 84))[1].tolist() == [[1, 2, 6]]
    with pytest.raises(ValueError, match=r"size must be positive multiples of 28, got \(28, 70\)"):
        transform(noise_frames(2, 60, 60), size=(28, 70))
    with pytest.raises(ValueError, match=r"expected uint8 frames \[N, H, W, 3\], got torch.float32"):
        transform(torch.zeros(2, 28, 28, 3))
    with pytest.raises(ValueError, match=r"got torch.uint8 \[2, 3, 28, 28\]"):
        transform(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"got torch.uint8 \[0, 28, 28, 3\]"):
        transform(torch.zeros(0, 28, 28, 3, dtype=torch.uint8))


def levels(diff, std):
    """Difference of pixel values [L, 3 * 2 * 14 * 14] -> uint8 levels (channel-major columns)."""
    return diff.abs() * 255 * torch.tensor(std).repeat_interleave(diff.shape[1] // 3)


def hub_image(processor, frame):
    """The PIL image processor on one [H, W, 3] uint8 frame: (pixel_values, image_grid_thw) tensors."""
    out = processor(images=[frame.numpy()], input_data_format="channels_last", return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def test_equal_to_the_pil_image_processor_without_resize():
    pytest.importorskip("PIL")  # the only hub Qwen2-VL processor that builds without torchvision
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil()  # 56x84 is within its default [3136, 1003520] px: no resize
    transform = Qwen2VLFrames(min_pixels=3136, max_pixels=1003520)
    for seed in range(3):
        frame = noise_frames(1, 56, 84, seed)
        want, grid = hub_image(processor, frame[0])
        got, got_grid = transform(frame.expand(2, -1, -1, -1))  # an image is tiled to temporal_patch_size
        assert torch.equal(got_grid, grid) and got.shape == want.shape
        # Same uint8 input; only the float32 rounding differs (PIL backend: x * (1/255) in float64, then
        # (x - mean) / std in float32; here the fused form): at most a few ulps (measured 2.4e-7).
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "bounds", "size"),
    [
        ((480, 854), (EVAL_MIN, LIVECC_MAX), (392, 728)),  # shrunk
        ((90, 120), (200 * 28 * 28, LIVECC_MAX), (364, 476)),  # enlarged to the minimum
        ((33, 47), (HUB_MIN, HUB_MAX), (56, 84)),  # 28x56 rounded is under 3136 px: enlarged, not 5x
    ],
)
def test_close_to_the_pil_image_processor_with_resize(shape, bounds, size):
    pytest.importorskip("PIL")
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(min_pixels=bounds[0], max_pixels=bounds[1])
    transform = Qwen2VLFrames(*bounds)
    assert transform.size_for(*shape) == size
    worst, total = 0.0, 0.0
    for seed, make in enumerate([noise_frames, smooth_frames] * 2):
        frame = make(1, *shape, seed=seed)
        want, grid = hub_image(processor, frame[0])
        got, got_grid = transform(frame.expand(2, -1, -1, -1))
        assert torch.equal(got_grid, grid) and grid.tolist() == [[1, size[0] // 14, size[1] // 14]]
        diff = levels(got - want, CLIP_STD)
        worst, total = max(worst, diff.max().item()), total + diff.mean().item()
    # PIL's bicubic and torch's CPU uint8 kernel are both fixed-point with uint8 between the passes but round
    # differently: measured over 20 frames per case, 0.3-0.85% of values differ by 1 level and ~1e-6 by 2,
    # never more. The + 0.01 absorbs the float32 normalisation.
    assert worst <= 2.01
    assert total / 4 < 0.015


@pytest.mark.parametrize(
    ("n", "shape", "bounds"),
    [
        (4, (56, 84), (HUB_MIN, HUB_MAX)),
        (5, (480, 854), (EVAL_MIN, LIVECC_MAX)),
        (2, (90, 120), (156800, LIVECC_MAX)),
    ],
)
def test_matches_the_hub_video_processor_exactly(n, shape, bounds):
    pytest.importorskip("torchvision")  # transformers' video processors need it (and PIL)
    from transformers import Qwen2VLVideoProcessor

    frames = noise_frames(n, *shape)
    processor = Qwen2VLVideoProcessor(min_pixels=bounds[0], max_pixels=bounds[1])
    out = processor(
        frames.numpy(), return_tensors="pt", input_data_format="channels_last", cap_pixels_per_frame=False
    )
    got, grid = Qwen2VLFrames(*bounds)(frames, pad=True)  # the hub pads an odd count with the last frame
    assert torch.equal(grid, out["video_grid_thw"])
    # Same torch kernel on CPU, same fused float32 arithmetic, same view/permute: bit-equal.
    assert torch.equal(got, out["pixel_values_videos"])


def write(folder, name, config):
    (folder / name).write_text(json.dumps(config))
    return folder / name


def test_from_pretrained_defaults_and_the_hub_config(tmp_path):
    assert Qwen2VLFrames.from_pretrained(tmp_path) == Qwen2VLFrames()  # no config: video processor defaults
    assert Qwen2VLFrames() == Qwen2VLFrames(128 * 784, 768 * 784, 14, 2, 2, CLIP_MEAN, CLIP_STD, 1 / 255)
    # Qwen2-VL-7B-Instruct's preprocessor_config.json as on the hub.
    hub = dict(min_pixels=HUB_MIN, max_pixels=HUB_MAX, patch_size=14, temporal_patch_size=2, merge_size=2)
    hub.update(
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), image_processor_type="Qwen2VLImageProcessor"
    )
    write(tmp_path, "preprocessor_config.json", hub)
    assert Qwen2VLFrames.from_pretrained(tmp_path) == Qwen2VLFrames(HUB_MIN, HUB_MAX)


def test_from_pretrained_key_styles_and_the_video_config_first(tmp_path):
    write(tmp_path, "preprocessor_config.json", {"size": {"shortest_edge": 100, "longest_edge": 200}})
    assert Qwen2VLFrames.from_pretrained(tmp_path) == Qwen2VLFrames(100, 200)
    write(
        tmp_path, "preprocessor_config.json", {"size": {"min_pixels": 10, "max_pixels": 20}, "max_pixels": 30}
    )
    assert Qwen2VLFrames.from_pretrained(tmp_path) == Qwen2VLFrames(10, 30)  # top-level keys win, as upstream
    video = {"size": {"shortest_edge": 1, "longest_edge": 2}, "temporal_patch_size": 4, "image_std": 0.5}
    write(tmp_path, "video_preprocessor_config.json", video)
    got = Qwen2VLFrames.from_pretrained(str(tmp_path))
    assert got == Qwen2VLFrames(1, 2, temporal_patch_size=4, std=(0.5,) * 3)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"resample": 2}, r"resample=2 is not bicubic \(3\)"),
        ({"do_normalize": False}, "do_normalize=False is not supported"),
        ({"size": 384}, r"bad preprocessor config \(AttributeError"),
        (
            {"min_pixels": "3136"},
            r"bad preprocessor config \(ValueError\(\"min_pixels must be a positive int",
        ),
        (
            {"merge_size": 0},
            r"bad preprocessor config \(ValueError\('merge_size must be a positive int, got 0",
        ),
        ({"image_mean": [0.5, 0.5]}, r"bad preprocessor config \(ValueError\('image_mean needs 3 values"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_from_pretrained_rejects_bad_configs_naming_the_file(tmp_path, config, message):
    path = write(tmp_path, "video_preprocessor_config.json", config)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {message}"):
        Qwen2VLFrames.from_pretrained(tmp_path)


def test_from_pretrained_rejects_malformed_json_naming_the_file(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text("{'min_pixels': 3136")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not valid JSON"):
        Qwen2VLFrames.from_pretrained(tmp_path)


def test_save_pretrained_round_trips_and_loads_in_the_hub_image_processor(tmp_path):
    pytest.importorskip("PIL")
    from transformers import Qwen2VLImageProcessorPil

    saved = Qwen2VLFrames(EVAL_MIN, LIVECC_MAX, mean=(0.5,) * 3, std=(0.25, 0.5, 0.75))
    saved.save_pretrained(tmp_path)
    assert Qwen2VLFrames.from_pretrained(tmp_path) == saved
    processor = Qwen2VLImageProcessorPil.from_pretrained(tmp_path)
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (EVAL_MIN, LIVECC_MAX)
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.25, 0.5, 0.75]
    assert (processor.patch_size, processor.temporal_patch_size, processor.merge_size) == (14, 2, 2)
    frame = noise_frames(1, 56, 56)  # below min_pixels: both scale it up to 280x280
    want, grid = hub_image(processor, frame[0])
    got, got_grid = saved(frame.expand(2, -1, -1, -1))
    assert torch.equal(got_grid, grid) and grid.tolist() == [[1, 20, 20]]
    assert levels(got - want, saved.std).max() <= 2.01  # the resize tolerance above


@pytest.mark.parametrize("processor", ["Qwen2VLImageProcessorPil", "Qwen2VLVideoProcessor"])
def test_from_pretrained_reads_what_the_hub_saves(tmp_path, processor):
    pytest.importorskip("PIL")
    if processor == "Qwen2VLVideoProcessor":
        pytest.importorskip("torchvision")
    import transformers

    kwargs = dict(min_pixels=EVAL_MIN, max_pixels=LIVECC_MAX, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    getattr(transformers, processor)(**kwargs).save_pretrained(tmp_path)
    got = Qwen2VLFrames.from_pretrained(tmp_path)
    assert got == Qwen2VLFrames(EVAL_MIN, LIVECC_MAX, mean=(0.5,) * 3, std=(0.25,) * 3)
