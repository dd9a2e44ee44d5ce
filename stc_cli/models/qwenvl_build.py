"""What ``qwen25vl.py`` and ``qwen3vl.py`` share: the stream settings, the stream's pruner budget, ``load``
(a checkpoint of an ``Architecture``) and ``build``: it in the protocol's layout (``simplestream``:
``RecentFrames``; ``qwenvl-turns``: the model's ``QwenVLStream``); ``build_for`` is a model's ``--model``
entry, both in one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stc_cli.models.base import STCSettings
from stc_cli.models.qwen2vl import Architecture, load_checkpoint
from stc_cli.models.qwenvl_recent import TEMPLATE as RECENT
from stc_cli.models.qwenvl_recent import RecentFrames, pruner_budget
from stc_cli.models.qwenvl_stream import QwenVLStream
from stc_cli.protocols import Protocol


@dataclass(frozen=True)
class StreamSettings:
    """Each video is resized once to ``min_pixels``-``max_pixels`` per temporal patch (qwen-vl-utils'
    per-frame video bounds, 128 to 768 merged tokens, by default)."""

    min_pixels: int
    max_pixels: int
    max_cache_tokens: int | None = None  # evict the oldest chunks past this many tokens


class QwenStream(QwenVLStream):
    """The Qwen-VL stream, STC's share its pruner's default budget (``qwenvl_recent.pruner_budget``)."""

    SETTINGS_KEY = "stream"
    TEMPLATE = "qwenvl-turns"
    FACTOR = 28  # one merged token's side in pixels

    @classmethod
    def default_settings(cls) -> StreamSettings:
        unit = cls.FACTOR * cls.FACTOR
        return StreamSettings(128 * unit, 768 * unit)

    @classmethod
    def default_protocol(cls) -> Protocol:
        from stc_cli.protocols import resolve

        return resolve(cls.NAME, "demo", "qwenvl-stream")

    def _budget(self, tokens: int) -> int:
        return pruner_budget(self.stc, tokens)


def build(qwen, stream: type[QwenStream], config, protocol: Protocol):
    """The model ``protocol`` runs on the loaded ``qwen``; ``config`` gives the STC flags (an unset
    ``--tokens-per-frame`` is STC's share of every frame) and ``--max-cache-tokens``."""
    stc = STCSettings.from_config(config, 0)
    if protocol.template == RECENT:
        recent = getattr(protocol, "recent_frames", None)
        if config.last_frames != recent:
            raise ValueError(
                f"--last-frames {config.last_frames}: the {protocol.name} protocol answers from the last "
                f"{recent} chunks (its recent_frames setting)"
            )
        return RecentFrames(qwen, stc, protocol, stream.NAME)
    settings = stream.default_settings()
    settings = StreamSettings(settings.min_pixels, settings.max_pixels, config.max_cache_tokens)
    return stream(qwen, stc, settings, protocol)


def load(arch: Architecture, source: str | None = None, *, device="cpu", dtype=None, revision=None):
    """A checkpoint of ``arch``: ``random:<preset>``, a folder or a hub id (default: its released
    checkpoint), in float32 unless ``dtype`` says otherwise."""
    source = source or arch.default_checkpoint
    return load_checkpoint(source, arch, device=device, dtype=dtype or torch.float32, revision=revision)


def build_for(arch: Architecture, stream: type[QwenStream], config, protocol: Protocol, device, dtype):
    """``stc eval --model NAME``: the checkpoint of ``config.model_path`` under ``protocol``."""
    return build(load(arch, config.model_path, device=device, dtype=dtype), stream, config, protocol)
