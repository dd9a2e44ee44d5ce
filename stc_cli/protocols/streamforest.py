"""StreamForest protocols: its own lmms-eval evaluation (a fresh memory per question), and a stream.

[SF] is github MCG-NJU/StreamForest at 0915f49 (its lmms-eval fork under ``lmms_eval/``, the model under
``llava/``); ``../shared/docs/upstream-streamforest.md`` sections 4-6 walk through it.

StreamForest needs three settings the shared table (``base.CHOICES``) does not have yet, so its presets
are a ``Protocol`` subclass that adds them: the ``template`` ``streamforest`` (ChatML with StreamForest's
time message before the question, the visual memory in place of ``<image>``), the ``user_text``
``streamforest-mcq`` (its lmms-eval tasks' multiple-choice text) and a setting of its own, ``memory``:
``question`` builds a fresh memory over the question's frames and reads it once (what upstream does),
``video`` keeps one memory per video, read after every frame (what a live system does; the tokens differ,
section 3.6). On OVO-Bench and StreamingBench the parity protocol takes StreamForest's ``dynamic_fps1``
frames of each question's clip (``stc_cli/video.py``), so it runs the clip schedule; on the demo, which
has no published number, it takes 1 fps by stride, so that one pass per video serves its questions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from stc_cli.benchmarks.base import Query
from stc_cli.protocols import texts
from stc_cli.protocols.base import CHOICES, Protocol

POST_PROMPT = "Answer with the option's letter from the given choices directly."  # [SF] ovobench_*.yaml
OWN_CHOICES = {
    "template": ("streamforest",),
    "user_text": ("streamforest-mcq",),
    "memory": ("question", "video"),
}

_LMMS = "[SF] lmms_eval/models/streamforest.py"
_OVO = "[SF] lmms_eval/tasks/ovobench"
_SB = "[SF] lmms_eval/tasks/streamingbench"


def streamforest_mcq(query: Query) -> str:
    """``question\\nA. x\\nB. y\\n`` + POST_PROMPT, as StreamForest's lmms-eval tasks write a multiple-choice
    question ([SF] ``lmms_eval/tasks/ovobench/utils.py:118-132``, ``streamingbench/utils.py:120-130``); an
    option's own ``A.`` label (stc's StreamingBench options carry one) is not repeated. A query without
    options (OVO-Bench forward active responding) keeps the benchmark's text: StreamForest asks its own
    rewritten questions there, from an annotation file stc does not have."""
    if not query.options:
        return query.prompt
    lines = []
    for i, option in enumerate(query.options):
        letter = chr(ord("A") + i)
        lines.append(f"{letter}. {option.removeprefix(f'{letter}. ')}\n")
    return f"{query.question}\n{''.join(lines)}{POST_PROMPT}"


@dataclass(frozen=True)
class StreamForestProtocol(Protocol):
    """A ``Protocol`` with StreamForest's template and user text, and its ``memory`` setting."""

    memory: str = "question"

    def __post_init__(self):
        if self.memory not in OWN_CHOICES["memory"]:
            raise ValueError(f"memory must be one of {', '.join(OWN_CHOICES['memory'])}, got {self.memory!r}")
        shared = {f.name: getattr(self, f.name) for f in fields(Protocol)}
        for name in ("template", "user_text"):
            if shared[name] in OWN_CHOICES[name]:
                shared[name] = CHOICES[name][0]  # the shared checks for everything else
        Protocol(**shared)

    def prepare(self, query: Query) -> Query:
        if self.user_text not in OWN_CHOICES["user_text"]:
            return super().prepare(query)
        return replace(query, prompt=streamforest_mcq(query), window=texts.WINDOWS[self.window](query))


_SOURCES = (
    (
        "fps",
        f"{_LMMS}:310-313 with [SF] llava/video_utils.py:102-169 (dynamic_fps1: int(duration + 1) frames)",
    ),
    (
        "sampling",
        "dynamic_fps1: the middles of int(duration + 1) equal intervals of the clip, at least 4 "
        "([SF] llava/video_utils.py:111-146); stride at 1 fps on the demo",
    ),
    ("max_frames", "[SF] scripts/eval/run_eval.sh:5 (max_num_frames 2048)"),
    ("window", f"{_OVO}/utils.py:44-67, {_SB}/utils.py:43-69 (the clip [start, end] of each question)"),
    ("user_text", f"{_OVO}/utils.py:118-132, ovobench_*.yaml post_prompt; {_SB}/utils.py:120-130"),
    (
        "template",
        "[SF] llava/conversation.py:435-444,584 (qwen_2: ChatML); "
        f"{_LMMS}:313,333-334,465 ('<image>\\n' + the short_online_v2 time message + the question)",
    ),
    ("decoding", f"{_OVO}/_default_template.yaml:6-11, {_SB}/_default_template.yaml:6-11 (greedy)"),
    ("max_new_tokens", f"{_OVO}/_default_template.yaml:7 (16)"),
    ("stop", f"{_LMMS}:539-543 (stop string <|im_end|>) and the checkpoint's eos"),
    ("reading", f"{_LMMS}:559-563 (skip_special_tokens, then strip)"),
    (
        "scorer",
        "robust: the nearest of stc's scorers to StreamForest's own letter extraction "
        f"({_OVO}/utils.py:135-212, micro accuracy), which stc does not reproduce",
    ),
)


def _parity(bench: str, comparable: str) -> StreamForestProtocol:
    exact = bench in ("ovo", "streamingbench")  # published numbers: StreamForest's own frames, per clip
    return StreamForestProtocol(
        name="streamforest-parity",
        model="streamforest",
        bench=bench,
        summary="StreamForest's own evaluation: per question a fresh memory over its frames, read once, "
        "greedy up to 16 tokens",
        comparable=comparable,
        fps=1.0,
        sampling="dynamic_fps1" if exact else "stride",
        max_frames=2048,
        schedule="clip" if exact else "auto",
        user_text="streamforest-mcq",
        template="streamforest",
        decoding="greedy",
        max_new_tokens=16,
        stop="eos+im_end",
        reading="as-is",
        scorer="robust",
        memory="question",
        sources=(
            *_SOURCES,
            (
                "schedule",
                f"{_LMMS}:449-505 (every question reads its clip afresh); on the demo one pass per video "
                "shares the ViT where frame times coincide, the memory still built per question",
            ),
            (
                "memory",
                "[SF] llava/model/multimodal_projector/projector_FSTW_PEMF.py:297-304 (a new MemoryManager "
                "per call, update() per frame, one get_memory_tokens())",
            ),
        ),
    )


def _stream(bench: str) -> StreamForestProtocol:
    return replace(
        _parity(bench, ""),
        name="streamforest-stream",
        sampling="stride",
        schedule="auto",
        summary="StreamForest as a live system runs it: one memory per video, read after every frame",
        comparable="not comparable with StreamForest's published numbers (the memory is compressed as frames "
        "arrive, so its tokens differ: spec section 3.6)",
        memory="video",
        sources=(
            *_SOURCES,
            ("schedule", "stc: one pass per video; answers as one clip per question would give"),
            (
                "memory",
                "spec section 3.6: one MemoryManager per video, get_memory_tokens() after every frame",
            ),
        ),
    )


_APPROXIMATE = (
    ", approximately: stc has neither StreamForest's annotation files (its rewritten forward questions) "
    "nor its scorer: stc score --mode robust"
)
PRESETS = (
    _parity("ovo", "StreamForest's OVO-Bench 55.6 (paper abstract)" + _APPROXIMATE),
    _parity("streamingbench", "StreamForest's StreamingBench 77.3 (paper abstract)" + _APPROXIMATE),
    _parity("demo", "nothing published: demo is stc's own smoke test"),
    *(_stream(bench) for bench in ("ovo", "streamingbench", "demo")),
)  # the first preset of a (model, benchmark) pair is its default
