"""LiveCC (a stock Qwen2-VL) with STC: the ``VideoModel`` behind ``stc eval --model livecc``.

The stream as LiveCC runs it (the ``livecc-stream`` protocol): frames at 2 fps, cut into 1-second chunks
of two frames (one temporal patch), each appended as its own user turn ``Time=t0-t1s`` + the chunk's
video tokens, on a KV cache carried across chunks. A question is one more user turn, answered greedily
(or, with ``option-logits`` decoding, by the option token with the largest logit after "The answer
is:\\n"); the cache is cut back afterwards, so answering leaves the memory as it was. A frame still
waiting for its partner is not visible to a question. LiveCC's own OVO-Bench evaluation, one turn per
clip, is ``livecc_clip.py``.

The loop is the Qwen-VL family's (``qwenvl_stream.py``): explicit 3-D M-RoPE positions for every segment
(transformers 5.x alone would give later video segments 1-D positions); the cacher on every vision block,
the pruner after the patch merger per temporal patch, kept tokens at their full-grid (t, h, w) positions.
"""

from __future__ import annotations

from dataclasses import dataclass

from stc_cli.models.base import STCSettings
from stc_cli.models.qwenvl_stream import CANDIDATES, LOGITS_PREFILL, QUESTION_TURN, QwenVLStream
from stc_cli.protocols import Protocol, resolve

SYSTEM_PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
CHUNK_TURN = "<|im_start|>user\nTime={start:.1f}-{end:.1f}s<|vision_start|>{video}<|vision_end|><|im_end|>\n"
PIXELS = (100 * 28 * 28, 384 * 28 * 28)  # livecc-utils: 100 to 384 merged tokens per temporal patch

__all__ = [
    "CANDIDATES",
    "CHUNK_TURN",
    "LOGITS_PREFILL",
    "QUESTION_TURN",
    "SYSTEM_PROMPT",
    "LiveCC",
]


@dataclass(frozen=True)
class LiveCCSettings:
    min_pixels: int = PIXELS[0]
    max_pixels: int = PIXELS[1]
    max_cache_tokens: int | None = None  # not upstream: evict the oldest chunks past this many tokens


class LiveCC(QwenVLStream):
    """The ``VideoModel`` (``models/base.py``) of LiveCC's live loop; ``TEMPLATE`` and ``DECODINGS`` say
    which protocols it runs (``livecc_clip.LiveCCClip`` runs the one-turn-per-clip evaluation)."""

    NAME = SETTINGS_KEY = "livecc"
    TEMPLATE = "livecc-turns"
    SYSTEM_PROMPT = SYSTEM_PROMPT
    CHUNK_TURN = CHUNK_TURN

    @classmethod
    def default_settings(cls) -> LiveCCSettings:
        return LiveCCSettings()

    @classmethod
    def default_protocol(cls) -> Protocol:
        return resolve("livecc", "demo", "livecc-stream")


def build(config, protocol: Protocol, device, dtype) -> LiveCC:
    """``stc eval --model livecc``: the Qwen2-VL checkpoint of ``config.model_path`` in LiveCC's loop, or
    in its OVO-Bench evaluation's one turn per clip (``livecc_clip.py``) as ``protocol`` says."""
    from stc_cli.models import qwen2vl

    qwen = qwen2vl.load(config.model_path or qwen2vl.DEFAULT_CHECKPOINT, device=device, dtype=dtype)
    stc = STCSettings.from_config(config, STCSettings.tokens_per_frame)  # per temporal patch
    settings = LiveCCSettings(max_cache_tokens=config.max_cache_tokens)
    if protocol.template == "livecc-clip":
        from stc_cli.models.livecc_clip import LiveCCClip

        return LiveCCClip(qwen, stc, settings, protocol)
    return LiveCC(qwen, stc, settings, protocol)
