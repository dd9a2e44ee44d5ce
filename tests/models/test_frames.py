import json
import re

import pytest
import torch
import torch.nn.functional as F

from stc_cli.models.frames import CLIP_MEAN, CLIP_STD, FrameTransform, resize_uint8

HALF = (0.5, 0.5, 0.5)  # the mean and std in llava-onevision-qwen2-7b-ov-hf's config files


def noise_frames(n, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=gen)


def smooth_frames(n, h, w, seed=0):
    """Noise upsampled 8x bilinearly: closer to video than white noise, no ringing-heavy edges."""
    gen = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, h // 8, w // 8, generator=gen) * 255, size=(h, w), mode="bilinear")
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def levels(diff, std):
    """Normalised difference [N, 3, h, w] -> uint8 levels, per channel."""
    return diff.abs() * 255 * torch.tensor(std)[:, None, None]


def test_frame_already_at_size_is_only_rescaled_and_normalised():
    frames = torch.zeros(2, 4, 6, 3, dtype=torch.uint8)
    frames[0, 0, 0] = torch.tensor([0, 255, 128])
    frames[1, 3, 5] = torch.tensor([51, 0, 255])
    out = FrameTransform(size=(4, 6))(frames)
    assert out.shape == (2, 3, 4, 6) and out.dtype == torch.float32
    # (v / 255 - mean) / std by hand: R 0 -> -0.48145466 / 0.26862954, G 255 -> 0.5421725 / 0.26130258,
    # B 128 -> (0.50196078 - 0.40821073) / 0.27577711. The fused float32 form is ulp-close to this one.
    want = torch.tensor([-1.79226253, 2.07488384, 0.33994864])
    torch.testing.assert_close(out[0, :, 0, 0], want, rtol=0, atol=1e-6)
    half = FrameTransform(size=(4, 6), mean=HALF, std=HALF)(frames, dtype=torch.float64)
    assert half.dtype == torch.float64
    torch.testing.assert_close(half[1, :, 3, 5], torch.tensor([-0.6, -1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(half[0, :, 1:, :], torch.full((3, 3, 6), -1.0, dtype=torch.float64))


@pytest.mark.parametrize("float_path", [False, True])
@pytest.mark.parametrize("size", [(56, 56), (384, 384), (100, 37)])
def test_constant_colour_stays_that_colour(size, float_path, monkeypatch):
    frames = torch.tensor([10, 128, 250], dtype=torch.uint8).expand(3, 240, 320, 3)
    if float_path:  # the CUDA branch, run on CPU
        monkeypatch.setattr(
            "stc_cli.models.frames.resize_uint8", lambda x, s, float_path: resize_uint8(x, s, True)
        )
    out = FrameTransform(size=size, mean=HALF, std=HALF)(frames)
    assert out.shape == (3, 3, *size)
    # (v / 255 - 0.5) / 0.5 = 2v / 255 - 1
    want = torch.tensor([-0.92156863, 0.00392157, 0.96078431])[None, :, None, None].expand_as(out)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("float_path", [False, True])
def test_resize_geometry_on_a_linear_ramp(float_path):
    # Bicubic (with or without antialias) reproduces a linear ramp away from the borders, and with
    # align_corners=False output pixel i samples input position (i + 0.5) * scale - 0.5.
    ramp = (torch.arange(96) * 2).to(torch.uint8).expand(1, 3, 30, 96)  # v(j) = 2j
    down = resize_uint8(ramp, (10, 32), float_path)  # scale 3: v(3i + 1) = 6i + 2
    assert torch.equal(down[..., 2:30], (torch.arange(2, 30) * 6 + 2).to(torch.uint8).expand(1, 3, 10, 28))
    ramp = (torch.arange(32) * 6).to(torch.uint8).expand(1, 3, 10, 32)  # v(j) = 6j
    up = resize_uint8(ramp, (30, 96), float_path)  # scale 1/3: v((i - 1) / 3) = 2i - 2
    assert torch.equal(up[..., 3:93], (torch.arange(3, 93) * 2 - 2).to(torch.uint8).expand(1, 3, 30, 90))


def test_cuda_float_path_is_within_one_level_of_the_cpu_uint8_kernel_on_smooth_frames():
    # torchvision resizes uint8 natively on CPU but through float32 on CUDA, so the hub processor itself
    # differs between devices; on smooth frames by at most 1 level (measured; on white noise upsampled to 384
    # it is up to ~26 levels, as the uint8 kernel clips the overshoot between its two passes).
    frames = smooth_frames(4, 240, 320).permute(0, 3, 1, 2)
    for size in [(56, 56), (384, 384), (27, 41)]:
        a, b = resize_uint8(frames, size, False), resize_uint8(frames, size, True)
        assert (a.int() - b.int()).abs().max() <= 1


def test_dtype_device_and_bad_input():
    out = FrameTransform(size=(8, 8))(noise_frames(2, 16, 12), dtype=torch.bfloat16, device="cpu")
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"expected uint8 frames \[N, H, W, 3\], got torch.float32"):
        FrameTransform()(torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"got torch.uint8 \[1, 3, 8, 8\]"):
        FrameTransform()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("size", [(56, 56), (384, 384)])
def test_matches_the_hub_video_processor_exactly(size):
    pytest.importorskip("torchvision")  # transformers' video processors need it (and PIL)
    from transformers import LlavaOnevisionVideoProcessor

    frames = noise_frames(3, 240, 320)
    ref = LlavaOnevisionVideoProcessor(size={"height": size[0], "width": size[1]})(
        frames.numpy(), return_tensors="pt", input_data_format="channels_last"
    )["pixel_values_videos"][0]
    # Same torch kernel on CPU, same fused float32 arithmetic: bit-equal (measured, torchvision 0.28).
    assert torch.equal(FrameTransform(size=size)(frames), ref)


@pytest.mark.parametrize("size", [(56, 56), (384, 384)])
def test_close_to_the_pil_image_processor(size):
    pytest.importorskip("PIL")  # every LlavaOnevision processor class needs pillow, even this numpy/PIL one
    from transformers import LlavaOnevisionImageProcessorPil

    # One pinpoint equal to `size` and no padding: view 0 is the whole frame resized to `size`.
    proc = LlavaOnevisionImageProcessorPil(
        size={"height": size[0], "width": size[1]}, image_grid_pinpoints=[list(size)]
    )
    frames = noise_frames(4, 240, 320)
    ref = torch.stack(
        [
            torch.as_tensor(
                proc([f.numpy()], input_data_format="channels_last", return_tensors="np")["pixel_values"][0][
                    0
                ]
            )
            for f in frames
        ]
    )
    diff = levels(FrameTransform(size=size)(frames) - ref, CLIP_STD)
    # PIL and torch's CPU uint8 kernel are both fixed-point, uint8 between the two passes, but round
    # differently: measured over 40 random 240x320 frames, 0.2% of values differ by 1 level and about 1 in
    # 10^6 by 2 (never more), for both sizes. The + 0.01 absorbs the float32 normalisation.
    assert diff.max() <= 2.01
    assert diff.mean() < 0.01


def write(folder, name, config):
    (folder / name).write_text(json.dumps(config))
    return folder / name


def test_from_pretrained_reads_height_width_and_prefers_the_video_config(tmp_path):
    assert FrameTransform.from_pretrained(tmp_path) == FrameTransform()  # no config: class defaults
    assert FrameTransform() == FrameTransform((384, 384), CLIP_MEAN, CLIP_STD, 1 / 255)
    # As in llava-onevision-qwen2-7b-ov-hf (other keys are ignored).
    config = dict(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3)
    write(tmp_path, "preprocessor_config.json", dict(config, rescale_factor=0.00392156862745098, do_pad=True))
    assert FrameTransform.from_pretrained(tmp_path) == FrameTransform(mean=HALF, std=HALF)
    write(tmp_path, "video_preprocessor_config.json", dict(config, size={"height": 224, "width": 336}))
    got = FrameTransform.from_pretrained(str(tmp_path))
    assert got == FrameTransform(size=(224, 336), mean=HALF, std=HALF)


def test_from_pretrained_shortest_edge_means_a_square(tmp_path):
    write(tmp_path, "preprocessor_config.json", {"size": {"shortest_edge": 224}, "image_std": 0.25})
    assert FrameTransform.from_pretrained(tmp_path) == FrameTransform(size=(224, 224), std=(0.25,) * 3)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"resample": 2}, r"resample=2 is not bicubic \(3\)"),
        ({"size": {"width": 384}}, r"bad preprocessor config \(KeyError\('height'\)\)"),
        ({"size": 384}, "bad preprocessor config"),
        ({"image_mean": [0.5, 0.5]}, r"bad preprocessor config \(ValueError\('image_mean needs 3 values"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_from_pretrained_rejects_bad_configs_naming_the_file(tmp_path, config, message):
    path = write(tmp_path, "video_preprocessor_config.json", config)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {message}"):
        FrameTransform.from_pretrained(tmp_path)


def test_from_pretrained_rejects_malformed_json_naming_the_file(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text("{'size': 384")
    with pytest.raises(
        ValueError, match=f"^{re.escape(str(tmp_path / 'preprocessor_config.json'))}: not valid JSON"
    ):
        FrameTransform.from_pretrained(tmp_path)


def test_from_config_dict_names_its_source():
    with pytest.raises(ValueError, match="^hub config: resample=0"):
        FrameTransform.from_config_dict({"resample": 0}, source="hub config")


@pytest.mark.parametrize("processor", ["LlavaOnevisionImageProcessorPil", "LlavaOnevisionVideoProcessor"])
def test_from_pretrained_round_trips_a_saved_processor(tmp_path, processor):
    pytest.importorskip("PIL")  # needed to build any LlavaOnevision processor
    if processor == "LlavaOnevisionVideoProcessor":
        pytest.importorskip("torchvision")
    import transformers

    saved = getattr(transformers, processor)(
        size={"height": 336, "width": 224}, image_mean=[0.5] * 3, image_std=[0.25, 0.5, 0.75]
    )
    saved.save_pretrained(tmp_path)
    got = FrameTransform.from_pretrained(tmp_path)
    assert got == FrameTransform(size=(336, 224), mean=HALF, std=(0.25, 0.5, 0.75))
