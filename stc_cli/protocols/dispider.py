"""Dispider protocols (experimental): its released OVO-Bench evaluation, and a stream.

[D] is github Mark12Ding/Dispider at ba288b4, [OVO] JoeLeelyf/OVO-Bench at c34093f (``models/Dispider.py``,
the wrapper behind the leaderboard row); ``../shared/docs/upstream-dispider.md`` sections 3-4 walk through
them. Dispider needs settings the shared table (``base.CHOICES``) does not have, so its presets are a
``Protocol`` subclass: the ``template`` ``dispider`` (the Vicuna-style ``conv_qwen`` prompt with the visual
block at ``<image>``), ``clips`` (``question``: the clips rebuilt per question from the frames of its clip, as
the wrapper does; ``video``: each clip perceived once as the stream fills it, the clip store kept),
``max_clips`` (the wrapper's cap on clips per question) and ``proactive`` (forward queries answered when the
model decides to, ``stc_cli/evaluation/runner.py``).

Not reproducible: Dispider's scene-based clips (paper section 3.2; no segmentation code is released, so its
own offline wrappers cut uniform clips, which is what stc does), and frame choice over every native frame
(stc picks Dispider's ``get_seq_frames`` indices among the frames it decodes at 1 fps).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from stc_cli.protocols.base import CHOICES, Protocol

OWN_CHOICES = {"template": ("dispider",), "clips": ("question", "video")}
_WRAPPER = "[OVO] models/Dispider.py"


@dataclass(frozen=True)
class DispiderProtocol(Protocol):
    """A ``Protocol`` with Dispider's template and its ``clips``, ``max_clips`` and ``proactive`` settings."""

    clips: str = "question"
    max_clips: int = 100
    proactive: bool = False

    def __post_init__(self):
        if self.clips not in OWN_CHOICES["clips"]:
            raise ValueError(f"clips must be one of {', '.join(OWN_CHOICES['clips'])}, got {self.clips!r}")
        if self.max_clips < 1:
            raise ValueError(f"max_clips must be >= 1, got {self.max_clips}")
        if self.proactive and (self.clips != "video" or self.schedule == "clip"):
            raise ValueError("the proactive loop needs the clip store (clips video) and the stream schedule")
        shared = {f.name: getattr(self, f.name) for f in fields(Protocol)}
        if shared["template"] in OWN_CHOICES["template"]:
            shared["template"] = CHOICES["template"][0]  # the shared checks for everything else
        Protocol(**shared)

    def settings(self) -> dict:
        """``Protocol.settings``, ``proactive`` only where set: a run from before it existed resumes."""
        settings = super().settings()
        if not self.proactive:
            del settings["proactive"]
        return settings


_SOURCES = (
    ("fps", "stc: frames decoded at 1 fps, Dispider's frames picked among them (its clips are about 1 fps)"),
    ("sampling", "stride at 1 fps; the clips' frames then by get_seq_frames ([D] inference.py:34-42,59-73)"),
    ("window", f"{_WRAPPER}:153-256 (each question's pre-cut clip chunked_videos/<id>.mp4)"),
    ("user_text", f"{_WRAPPER}:153-256 (OVO-Bench's prompt templates passed as the question)"),
    ("template", "[D] dispider/conversation.py:287-297 (conv_qwen: 'SYSTEM USER: <image>\\n{q} ASSISTANT:')"),
    ("decoding", "[D] inference.py:232 (do_sample=False)"),
    ("max_new_tokens", "[D] inference.py:233 (1024)"),
    ("stop", "[D] inference.py:193-198 (stop on <|im_end|>) and the checkpoint's eos"),
    ("reading", "[D] inference.py:239-240 (skip_special_tokens, then strip)"),
    ("scorer", "OVO-Bench's official scoring of the wrapper's responses"),
    ("max_clips", f"[D] inference.py:140, {_WRAPPER}:153-155 (100 clips of 16 frames)"),
)


def _parity(bench: str, comparable: str) -> DispiderProtocol:
    return DispiderProtocol(
        name="dispider-parity",
        model="dispider",
        bench=bench,
        summary="Dispider's released OVO-Bench wrapper: per question clamp(round(duration/16), 1, 100) "
        "uniform clips of 16 frames rebuilt from its clip, top-4 clips retrieved, greedy up to 1024 tokens",
        comparable=comparable,
        fps=1.0,
        schedule="clip" if bench == "ovo" else "auto",
        template="dispider",
        max_new_tokens=1024,
        stop="eos+im_end",
        scorer="official",
        clips="question",
        sources=(
            *_SOURCES,
            ("schedule", f"{_WRAPPER}:153-256 (every question reads its own clip afresh)"),
            ("clips", "[D] inference.py:59-73 (clips rebuilt per call: nothing is kept between questions)"),
        ),
    )


def _stream(bench: str) -> DispiderProtocol:
    return replace(
        _parity(bench, ""),
        name="dispider-stream",
        schedule="auto",
        summary="Dispider as a live system: 16-frame clips at 1 fps perceived once each and kept, a question "
        "reads every clip so far (the last one partial)",
        comparable="not comparable with Dispider's published numbers (clip boundaries follow the stream, not "
        "each question's clip)",
        clips="video",
        sources=(
            *_SOURCES,
            ("schedule", "stc: one pass per video; answers as one clip per question would give"),
            ("clips", "[D2] dispider/streaming/session.py (fixed 16-s windows of 16 frames at 1 fps, kept)"),
        ),
    )


def _proactive() -> DispiderProtocol:
    stream = _stream("ovo")
    return replace(
        stream,
        name="dispider-proactive",
        schedule="stream",
        summary="dispider-stream, and OVO-Bench's forward (active-responding) questions posed at the video's "
        "start: the silent head decides after each clip whether to answer, and a probe is scored on the "
        "answer given at the last decision up to its time (asked at its time where there is none)",
        comparable="not comparable with any published number (OVO-Bench asks forward questions at each probe "
        "time; here the model chooses when it answers)",
        proactive=True,
        sources=(
            *stream.sources,
            ("proactive", "[D] modeling_qwen.py:1276-1307 (after each clip, silent-head logit > 0: answer)"),
        ),
    )


_UNIFORM = (
    ", approximately: uniform clips, not the paper's scene-based ones (unreleased); frames picked among "
    "those decoded at 1 fps"
)
PRESETS = (
    _parity("ovo", "Dispider's OVO-Bench 41.78 (leaderboard: RT 54.55, BW 36.06, FW 34.72)" + _UNIFORM),
    _parity("demo", "nothing published: demo is stc's own smoke test"),
    *(_stream(bench) for bench in ("ovo", "demo")),
    _proactive(),  # OVO-Bench only: the demo has no forward questions
)  # the first preset of a (model, benchmark) pair is its default
