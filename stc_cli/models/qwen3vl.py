"""Qwen3-VL with STC: the ``VideoModel`` behind ``stc eval --model qwen3vl``.

``Qwen3VLForConditionalGeneration`` (transformers 5.x) from ``Qwen/Qwen3-VL-8B-Instruct`` (the default; the
2B and 4B checkpoints load the same way), another folder or hub id, or ``random:tiny`` / ``random:full`` (the
8B's widths, random weights). Its vision tower: 27 blocks of width 1152, patches of 16 px, a learned
position grid, and deepstack features taken after blocks 8, 16 and 24 that the LLM adds to the hidden
states of the visual tokens after its first three layers. Frames as its image processor makes them
(patch 16, so multiples of 32; mean and std 0.5).

Protocols (``stc_cli/protocols/qwenvl.py``): ``simplestream`` (the default on OVO-Bench, StreamingBench and
the demo: ``qwenvl_recent.py``), ``simplestream-mrope``, and ``qwenvl-stream`` (``qwenvl_stream.py``'s loop:
one user turn per 1-second chunk written as Qwen3-VL's processor writes a temporal patch, ``<t seconds>``
then the vision block, with the chunk's deepstack features).
"""

from __future__ import annotations

import functools

from stc_cli.models import qwenvl_build
from stc_cli.models.presets import QWEN3VL_VISION_PRESETS
from stc_cli.models.qwen2vl import Architecture
from stc_cli.models.qwen2vl_frames import Qwen2VLFrames
from stc_cli.models.qwenvl_build import QwenStream

DEFAULT_CHECKPOINT = "Qwen/Qwen3-VL-8B-Instruct"
# Qwen3-VL-8B-Instruct's preprocessor_config.json: Qwen2VLImageProcessorFast, 65536 to 16777216 px, patch 16
FRAMES = Qwen2VLFrames(min_pixels=65536, max_pixels=16777216, patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
# Qwen3VLTextConfig fields: Qwen3-8B's widths (config.json, text_config), and a tiny one
TEXT_PRESETS = {
    "qwen3-8b": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=262144,
        rope_parameters={"rope_theta": 5_000_000.0},
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    ),
}
ARCHITECTURE = Architecture(
    name="Qwen3-VL",
    model_type="qwen3_vl",
    config_class="Qwen3VLConfig",
    model_class="Qwen3VLForConditionalGeneration",
    default_checkpoint=DEFAULT_CHECKPOINT,
    frames=FRAMES,
    random_presets={
        "tiny": (QWEN3VL_VISION_PRESETS["qwen3vl-tiny"], TEXT_PRESETS["tiny"], [4, 2, 2], None),
        "full": (QWEN3VL_VISION_PRESETS["qwen3vl-8b"], TEXT_PRESETS["qwen3-8b"], [24, 20, 20], 151936),
    },
    rope_extra=(("mrope_interleaved", True),),
    frames_file="preprocessor_config.json",
    instruct_eos=True,
)


class Qwen3VLStream(QwenStream):
    NAME = "qwen3vl"
    SYSTEM_PROMPT = ""  # Qwen3-VL's chat template has no default system turn
    # Qwen3VLProcessor writes a temporal patch as "<{t:.1f} seconds>" + its vision block, t the mean of its
    # two frames' times (processing_qwen3_vl.py:75-103, _calculate_timestamps)
    CHUNK_TURN = "<|im_start|>user\n<{middle:.1f} seconds><|vision_start|>{video}<|vision_end|><|im_end|>\n"
    FACTOR = 32


load = functools.partial(qwenvl_build.load, ARCHITECTURE)
build = functools.partial(qwenvl_build.build_for, ARCHITECTURE, Qwen3VLStream)  # stc eval --model qwen3vl
