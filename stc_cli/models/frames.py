"""Video frames -> SigLIP pixel values for LLaVA-OneVision, in plain torch (no torchvision).

Mirrors transformers' ``LlavaOnevisionVideoProcessor`` (5.24, torchvision backend), which for every frame:
1. resizes uint8 -> uint8 to ``size`` with torchvision's ``resize`` (bicubic, antialias, align_corners=False;
   no crop, no pad; a frame already at ``size`` is left untouched);
2. rescales and normalises in one fused float32 step: ``(x - mean / rescale) / (std / rescale)``.
Step 1 depends on the device, in torchvision and here alike: see ``resize_uint8``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# transformers.utils.constants.OPENAI_CLIP_MEAN / OPENAI_CLIP_STD: the LlavaOnevision processors' defaults.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the only resample this module implements
CONFIG_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")  # the first found wins


def resize_uint8(images: torch.Tensor, size: tuple[int, int], float_path: bool) -> torch.Tensor:
    """[N, 3, H, W] uint8 -> [N, 3, *size] uint8, bicubic + antialias, as torchvision's resize does it."""
    if not float_path:
        # torchvision (>= 0.20 at least) on CPU: torch's native uint8 kernel (fixed-point weights, uint8
        # between the horizontal and vertical passes, like PIL).
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    # Elsewhere (CUDA): float32 interpolation, then clamp and round back to uint8.
    out = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def normalize(x: torch.Tensor, mean: tuple, std: tuple, rescale_factor: float, dtype) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> ``dtype``: fused as in transformers' rescale_and_normalize, float32 mean and
    std scaled by ``1 / rescale_factor``."""
    mean, std = _scaled(mean, std, rescale_factor, x.device)
    return x.float().sub_(mean[:, None, None]).div_(std[:, None, None]).to(dtype)


@functools.lru_cache(maxsize=8)
def _scaled(mean: tuple, std: tuple, rescale_factor: float, device: torch.device) -> tuple:
    """Made on the device once: a copy from the host for every frame would wait for the device."""
    with torch.inference_mode(False):  # plain tensors, readable in and outside inference mode
        return tuple(torch.tensor(t, device=device) * (1.0 / rescale_factor) for t in (mean, std))


def read_preprocessor_config(folder: str | Path) -> tuple[dict, str] | None:
    """``(config, path)`` of a checkpoint folder's video (else image) preprocessor config, None if it has
    neither; ValueError naming the file when it is not JSON."""
    for name in CONFIG_FILES:
        path = Path(folder) / name
        if path.is_file():
            try:
                return json.loads(path.read_text()), str(path)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from err
    return None


def write_preprocessor_config(folder: str | Path, processor_type: str, frames, **fields) -> None:
    """``preprocessor_config.json`` for the hub's ``processor_type``: its own ``fields``, then the
    normalisation of ``frames`` (mean, std, rescale_factor) and bicubic resizing, as both models use."""
    config = {
        "image_processor_type": processor_type,
        **fields,
        "image_mean": list(frames.mean),
        "image_std": list(frames.std),
        "rescale_factor": frames.rescale_factor,
        "resample": BICUBIC,
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    Path(folder, CONFIG_FILES[1]).write_text(json.dumps(config, indent=2) + "\n")


@dataclass(frozen=True)
class FrameTransform:
    """Resize + rescale + normalise frames for the vision tower. Defaults are the processor class defaults."""

    size: tuple[int, int] = (384, 384)  # (height, width)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> FrameTransform:
        """Read the video (else image) preprocessor config of a local checkpoint folder; none -> defaults."""
        found = read_preprocessor_config(folder)
        return cls.from_config_dict(*found) if found else cls()

    @classmethod
    def from_config_dict(cls, config: dict, source: str) -> FrameTransform:
        """Parse a preprocessor config dict; ``source`` names it in errors. Absent keys keep the defaults."""
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
        if config.get("resample", BICUBIC) != BICUBIC:
            raise ValueError(f"{source}: resample={config['resample']!r} is not bicubic ({BICUBIC})")
        kw = {}
        try:
            if (size := config.get("size")) is not None:
                # The tower's fixed 27x27 grid needs fixed-size frames: shortest_edge s means (s, s), as in
                # the image processor's base view (the video processor would keep the aspect ratio).
                side = size.get("shortest_edge")
                kw["size"] = (int(side), int(side)) if side else (int(size["height"]), int(size["width"]))
            for key in ("mean", "std"):
                if (value := config.get(f"image_{key}")) is not None:
                    value = [value] * 3 if isinstance(value, (int, float)) else value
                    if len(value) != 3:
                        raise ValueError(f"image_{key} needs 3 values, got {value!r}")
                    kw[key] = tuple(float(v) for v in value)
            if (factor := config.get("rescale_factor")) is not None:
                kw["rescale_factor"] = float(factor)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: bad preprocessor config ({err!r})") from err
        return cls(**kw)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``preprocessor_config.json`` as the hub's LlavaOnevision image processor would."""
        write_preprocessor_config(
            folder, "LlavaOnevisionImageProcessor", self, size={"height": self.size[0], "width": self.size[1]}
        )

    def __call__(self, frames: torch.Tensor, dtype=torch.float32, device=None) -> torch.Tensor:
        """[N, H, W, 3] uint8 RGB -> [N, 3, *size] pixel values of ``dtype`` on ``device`` (None: frames')."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        x = frames.to(device).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != self.size:
            x = resize_uint8(x, self.size, float_path=x.device.type != "cpu")
        return normalize(x, self.mean, self.std, self.rescale_factor, dtype)
