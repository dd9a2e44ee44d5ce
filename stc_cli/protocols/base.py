"""A named evaluation protocol: every setting around the model that moves a score, in one frozen object.

The benchmark fixes what a query is; the protocol fixes how it is put to the model: which frames (rate,
sampling rule, window), which text retrieves frames and which is prefilled, how the model decodes, how
the answer is read from its response, and which ``stc score`` mode gives a number comparable with the
published one. The presets (``rekv.py``, ``livecc.py``) cite the upstream file and line of each setting.
Kept free of heavy imports: ``stc eval --show-protocol`` prints one without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from stc_cli.benchmarks.base import Query
from stc_cli.protocols import texts

# The values each setting takes (what they mean: docs/protocols.md, "Settings").
CHOICES = {
    "sampling": ("stride", "uniform", "dynamic_fps1"),  # stc_cli/video.py
    "schedule": ("auto", "stream", "clip"),  # auto: stream where every window starts at 0, else clip
    "window": ("benchmark", "livecc-ovo"),
    "user_text": ("benchmark", "stc-mcq", "livecc-ovo"),
    "retrieval": ("prompt", "question", None),  # None: the model does not retrieve
    "template": ("plain", "rekv-chat", "livecc-turns", "livecc-clip"),
    "decoding": ("greedy", "option-logits", "candidate-logits"),
    "stop": ("eos", "eos+im_end"),
    "reading": ("as-is", "last-line"),
    "scorer": ("official", "robust", "stc"),
}
# Descriptive fields: shown and documented, but not settings (a reworded summary must not block a resume).
_TEXT_FIELDS = ("summary", "comparable", "sources")


@dataclass(frozen=True)
class Protocol:
    """How ``model`` is evaluated on ``bench`` under ``name``. ``sources`` maps a setting to the upstream
    file and line it reproduces; ``changed`` lists the settings a flag overrode."""

    name: str
    model: str
    bench: str
    summary: str
    comparable: str
    fps: float
    sampling: str = "stride"
    max_frames: int = 480  # the uniform and dynamic_fps1 rules' cap
    visual_budget: int | None = None  # visual tokens per clip (LiveCC's evaluation); None: the model's own
    schedule: str = "auto"
    window: str = "benchmark"
    user_text: str = "benchmark"
    retrieval: str | None = None
    template: str = "plain"
    decoding: str = "greedy"
    max_new_tokens: int = 128
    stop: str = "eos"
    first_token_rule: bool = False  # an end token as the very first token gives way to the second best
    cleanup: bool = False  # transformers 4.x's clean_up_tokenization on the decoded text
    reading: str = "as-is"
    scorer: str = "official"
    sources: tuple[tuple[str, str], ...] = ()
    changed: tuple[str, ...] = ()

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                known = ", ".join(str(value) for value in allowed)
                raise ValueError(
                    f"--{name.replace('_', '-')} must be one of {known}, got {getattr(self, name)!r}"
                )
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"--fps must be > 0, got {self.fps}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")

    def override(self, **settings) -> Protocol:
        """This protocol with ``settings`` changed (None values are ignored), remembering which."""
        settings = {k: v for k, v in settings.items() if v is not None and v != getattr(self, k)}
        if not settings:
            return self
        return replace(self, **settings, changed=tuple(sorted({*self.changed, *settings})))

    def settings(self) -> dict:
        """The settings and which of them a flag changed, as ``run.json`` records them (and a resume
        compares them)."""
        return {k: v for k, v in asdict(self).items() if k not in _TEXT_FIELDS}

    def rows(self) -> list[tuple[str, str, str]]:
        """``(setting, value, what it reproduces)`` for every setting that applies, in declaration order."""
        sources = dict(self.sources)
        moot = {"max_frames"} if self.sampling == "stride" else set()
        if self.decoding != "greedy":  # read from logits: nothing is generated
            moot |= {"max_new_tokens", "stop", "first_token_rule", "cleanup"}
        rows = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in (*_TEXT_FIELDS, "changed", "name", "model", "bench", *moot) or value is None:
                continue
            source = "changed by a flag" if field.name in self.changed else sources.get(field.name, "")
            rows.append((field.name, str(value), source))
        return rows

    def sampling_rule(self):
        """The ``stc_cli.video.Sampling`` of this protocol's frames."""
        from stc_cli.video import Sampling

        return Sampling(self.fps, self.sampling, self.max_frames)

    def prepare(self, query: Query) -> Query:
        """``query`` as this protocol puts it to the model: its user text and its window."""
        prompt = texts.USER_TEXTS[self.user_text](query)
        window = texts.WINDOWS[self.window](query)
        return replace(query, prompt=prompt, window=window)

    def read(self, response: str) -> str:
        """The answer a scorer reads from the model's full ``response``."""
        if self.reading == "last-line":
            lines = response.strip().splitlines()
            return lines[-1] if lines else ""
        return response
