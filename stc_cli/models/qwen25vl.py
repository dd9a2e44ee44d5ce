"""Qwen2.5-VL with STC: the ``VideoModel`` behind ``stc eval --model qwen25vl``.

``Qwen2_5_VLForConditionalGeneration`` (transformers 5.x) from ``Qwen/Qwen2.5-VL-7B-Instruct`` (the default),
another checkpoint folder or hub id, or ``random:tiny`` / ``random:full`` (the 7B's widths, random
weights). Its vision tower is Qwen2-VL's with RMSNorm, a gated MLP and window attention (4 full-attention
blocks of 32); frames as its image processor makes them (Qwen2-VL's: patch 14, CLIP normalisation).

Protocols (``stc_cli/protocols/qwenvl.py``): ``simplestream`` (the default on OVO-Bench, StreamingBench and
the demo: ``qwenvl_recent.py``), ``simplestream-mrope``, and ``qwenvl-stream`` (``qwenvl_stream.py``'s loop:
one user turn per 1-second chunk, no text but the vision block, after Qwen2.5-VL's default system turn).
"""

from __future__ import annotations

import functools

from stc_cli.models import qwenvl_build
from stc_cli.models.presets import LLM_PRESETS, QWEN25VL_VISION_PRESETS
from stc_cli.models.qwen2vl import Architecture
from stc_cli.models.qwen2vl_frames import Qwen2VLFrames
from stc_cli.models.qwenvl_build import QwenStream

DEFAULT_CHECKPOINT = "Qwen/Qwen2.5-VL-7B-Instruct"
# Qwen2.5-VL-7B-Instruct's preprocessor_config.json: Qwen2VLImageProcessor, 3136 to 12845056 px
FRAMES = Qwen2VLFrames(min_pixels=3136, max_pixels=12845056)
ARCHITECTURE = Architecture(
    name="Qwen2.5-VL",
    model_type="qwen2_5_vl",
    config_class="Qwen2_5_VLConfig",
    model_class="Qwen2_5_VLForConditionalGeneration",
    default_checkpoint=DEFAULT_CHECKPOINT,
    frames=FRAMES,
    random_presets={
        "tiny": (QWEN25VL_VISION_PRESETS["qwen25vl-tiny"], LLM_PRESETS["tiny"], [2, 3, 3], None),
        # Qwen2.5-7B has Qwen2-7B's widths
        "full": (QWEN25VL_VISION_PRESETS["qwen25vl-7b"], LLM_PRESETS["qwen2-7b"], [16, 24, 24], 152064),
    },
    frames_file="preprocessor_config.json",
    instruct_eos=True,
)


class Qwen25VLStream(QwenStream):
    NAME = "qwen25vl"
    SYSTEM_PROMPT = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # its chat template's default
    )
    CHUNK_TURN = "<|im_start|>user\n<|vision_start|>{video}<|vision_end|><|im_end|>\n"
    FACTOR = 28


load = functools.partial(qwenvl_build.load, ARCHITECTURE)
build = functools.partial(qwenvl_build.build_for, ARCHITECTURE, Qwen25VLStream)  # stc eval --model qwen25vl
