"""Video frames -> Qwen2-VL ``pixel_values_videos`` and ``video_grid_thw``, in plain torch (no torchvision).

Mirrors transformers' ``Qwen2VLVideoProcessor`` (5.24, torchvision backend), which for a video:
1. picks one size for all its frames with ``smart_resize`` (H and W multiples of ``patch_size * merge_size``,
   H * W within [min_pixels, max_pixels], aspect ratio kept as well as possible);
2. resizes uint8 -> uint8 with torchvision's ``resize`` (bicubic, antialias; a frame already at that size
   is left untouched), on CPU with torch's native uint8 kernel (see ``frames.resize_uint8``);
3. rescales and normalises in one fused float32 step: ``(x - mean / rescale) / (std / rescale)``;
4. pads the frame count to a multiple of ``temporal_patch_size`` by repeating the last frame;
5. flattens into patches in merge-window order (see ``Qwen2VLFrames.__call__``).
The image processor does the same to one image tiled ``temporal_patch_size`` times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from stc_cli.models.frames import (
    BICUBIC,
    CLIP_MEAN,
    CLIP_STD,
    normalize,
    read_preprocessor_config,
    resize_uint8,
    write_preprocessor_config,
)

# Qwen2VLVideoProcessor's class defaults, used when a checkpoint folder has no preprocessor config. A stock
# Qwen2-VL checkpoint has only preprocessor_config.json (min_pixels 3136, max_pixels 12845056), which the hub
# video processor then loads too; LiveCC's demo caps frames at 384 * 28 * 28 (pass it as max_pixels).
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
MAX_ASPECT_RATIO = 200


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """(height, width) -> (H, W): multiples of ``factor``, H * W in [min_pixels, max_pixels] where possible.

    transformers' rule, defaults included: round each side to the nearest multiple (Python's round, so ties go
    to the even multiple); if the area is then above max_pixels, scale both sides by the same factor and floor
    (each side at least ``factor``); if below min_pixels, scale up and ceil. An extreme frame may end up
    outside the bounds, as upstream. Raises ValueError for an aspect ratio above 200 (upstream's message).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")  # upstream: ZeroDivisionError
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Qwen2VLFrames:
    """Resize, normalise and patchify video frames for the Qwen2-VL vision tower.

    Defaults are ``Qwen2VLVideoProcessor``'s class defaults.
    """

    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255

    def __post_init__(self):
        for name in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def factor(self) -> int:
        """Side multiple of a resized frame: one merge window of patches."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Qwen2VLFrames:
        """Read the video (else image) preprocessor config of a local checkpoint folder; none -> defaults."""
        found = read_preprocessor_config(folder)
        return cls.from_config_dict(*found) if found else cls()

    @classmethod
    def from_config_dict(cls, config: dict, source: str) -> Qwen2VLFrames:
        """Parse a preprocessor config dict; ``source`` names it in errors. Absent keys keep the defaults.

        Pixel bounds as the hub's ``__init__`` reads them: top-level ``min_pixels``/``max_pixels`` win over
        ``size.shortest_edge``/``size.longest_edge``; ``size.min_pixels``/``max_pixels`` (4.4x configs) last.
        """
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
        if config.get("resample", BICUBIC) != BICUBIC:
            raise ValueError(f"{source}: resample={config['resample']!r} is not bicubic ({BICUBIC})")
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if config.get(flag, True) is not True:
                raise ValueError(f"{source}: {flag}={config[flag]!r} is not supported")
        kw = {}
        try:
            size = config.get("size") or {}
            for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
                value = config.get(key, size.get(edge, size.get(key)))
                if value is not None:
                    kw[key] = value
            for key in ("patch_size", "temporal_patch_size", "merge_size"):
                if (value := config.get(key)) is not None:
                    kw[key] = value
            for key in ("mean", "std"):
                if (value := config.get(f"image_{key}")) is not None:
                    value = [value] * 3 if isinstance(value, (int, float)) else value
                    if len(value) != 3:
                        raise ValueError(f"image_{key} needs 3 values, got {value!r}")
                    kw[key] = tuple(float(v) for v in value)
            if (factor := config.get("rescale_factor")) is not None:
                kw["rescale_factor"] = float(factor)
            return cls(**kw)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: bad preprocessor config ({err!r})") from err

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``preprocessor_config.json`` for the hub's ``Qwen2VLImageProcessor`` (both key styles)."""
        write_preprocessor_config(
            folder,
            "Qwen2VLImageProcessor",
            self,
            min_pixels=self.min_pixels,  # read by transformers 4.x; 5.x also takes them over `size`
            max_pixels=self.max_pixels,
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
        )

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """Resized (H, W) of a video whose frames are height x width: the same for all its frames/chunks."""
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def __call__(
        self,
        frames: torch.Tensor,
        size: tuple[int, int] | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
        pad: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, H, W, 3] uint8 RGB -> (pixel_values [N/tp * gh * gw, 3*tp*p*p], grid_thw [[N/tp, gh, gw]]).

        ``size``: the resized (H, W), by default ``size_for(H, W)``; pass the first chunk's to every chunk
        of a stream. N must be a multiple of ``temporal_patch_size`` (tp) unless ``pad``: then the last frame
        is repeated, as the hub video processor does. The default refuses, so that a stream never pads a
        chunk silently. ``pixel_values``: ``dtype`` on ``device`` (None: frames'); ``grid_thw``: long, there.

        Row order (5.24 video processor): t, then merge windows in raster order, then the 2x2 patches of a
        window in raster order; columns: channel, frame within the temporal patch, patch row, patch column.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or not len(frames):
            raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        n, tp, p, m = len(frames), self.temporal_patch_size, self.patch_size, self.merge_size
        if n % tp and not pad:
            raise ValueError(
                f"got {n} frames, need a multiple of temporal_patch_size={tp}: repeat the last frame "
                "(as the hub does) or pass pad=True"
            )
        size = self.size_for(*frames.shape[1:3]) if size is None else tuple(size)
        if len(size) != 2 or any(s <= 0 or s % self.factor for s in size):
            raise ValueError(f"size must be positive multiples of {self.factor}, got {size!r}")
        x = frames.to(device).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != size:
            x = resize_uint8(x, size, float_path=x.device.type != "cpu")
        if n % tp:  # after the resize: fewer pixels to copy, same values
            x = torch.cat([x, x[-1:].expand(tp - n % tp, -1, -1, -1)])
        x = normalize(x, self.mean, self.std, self.rescale_factor, dtype)
        gt, gh, gw = len(x) // tp, size[0] // p, size[1] // p
        # The hub's view/permute without its batch dim: (t, tp, C, gh/m, m, p, gw/m, m, p)
        # -> (t, gh/m, gw/m, m, m, C, tp, p, p), so each 2x2 merge window is 4 consecutive rows.
        x = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        pixel_values = x.reshape(gt * gh * gw, 3 * tp * p * p)
        return pixel_values, torch.tensor([[gt, gh, gw]], dtype=torch.long, device=x.device)


# qwen-vl-utils 0.0.14 (``vision_process.py``), as SimpleStream decodes a clip (``fetch_video``, default
# ``image_patch_size=14``): every frame of a clip of ``nframes`` sampled frames gets one size, multiples of 28
# with 128 to 768 merged tokens each, at most a share of 128000 * 28 * 28 * 0.9 px over the clip.
QWEN_VL_UTILS_FACTOR = 28
VIDEO_MIN_TOKENS, VIDEO_MAX_TOKENS = 128, 768  # VIDEO_MIN_TOKEN_NUM, VIDEO_MAX_TOKEN_NUM
MODEL_SEQ_LEN = 128000  # the MODEL_SEQ_LEN environment variable's default


def qwen_vl_utils_size(
    height: int, width: int, nframes: int, factor: int = QWEN_VL_UTILS_FACTOR
) -> tuple[int, int]:
    """(H, W) qwen-vl-utils' ``fetch_video`` resizes the ``nframes`` frames of a height x width clip to
    (``vision_process.py:448-469``): ``max_pixels = max(min(768 f^2, total / nframes * 2), int(128 f^2 *
    1.05))`` with ``total = 128000 f^2 * 0.9``, then its own ``smart_resize``, which differs from
    transformers' only in where it keeps a side at least ``factor`` (rounding, not shrinking)."""
    if nframes < 1:
        raise ValueError(f"nframes must be >= 1, got {nframes}")
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    min_pixels = VIDEO_MIN_TOKENS * factor * factor
    total_pixels = MODEL_SEQ_LEN * factor * factor * 0.9
    max_pixels = max(
        min(VIDEO_MAX_TOKENS * factor * factor, total_pixels / nframes * 2), int(min_pixels * 1.05)
    )
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
