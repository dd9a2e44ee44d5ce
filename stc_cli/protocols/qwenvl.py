"""Qwen2.5-VL and Qwen3-VL protocols: SimpleStream's recent-frames evaluation, and a stream on a KV cache.

[SS] is github EvolvingLMMs-Lab/SimpleStream at be227ee, run with qwen-vl-utils 0.0.14 and transformers
4.57.6 (Qwen3-VL) or 4.52.4 (Qwen2.5-VL), its ``requirements-qwen3.txt`` / ``requirements-qwen25.txt``.
SimpleStream answers each question from the last N one-second chunks of its clip (N = 4), each frame an
image, in one user turn; its published Qwen3-VL-8B numbers (StreamingBench 80.59, OVO-Bench real-time /
backward 81.4 / 54.0) come from it.

What running that code does, and ``simplestream`` reproduces: the frames as qwen-vl-utils decodes the clip
(1 fps spread evenly over it, at most 768, each resized once with 128 to 768 merged tokens at factor 28),
then each frame through the image processor; the prompt built by hand (no system turn); and generation
from ``inputs_embeds``. The code hands ``generate`` 3-D positions, but both transformers versions drop them
(``prepare_inputs_for_generation`` sets ``position_ids = None``) and, with no ``input_ids``, fall back to
1-D positions 0, 1, 2, ... over the whole prompt; and of Qwen3-VL's vision output only the merged tokens
are kept, so no deepstack features reach the LLM. ``simplestream-mrope`` is the same with what the model
was trained with (per-frame vision blocks at their 3-D positions, deepstack features added): not what
produced the published numbers.

The settings the shared table (``base.CHOICES``) does not have live in a ``Protocol`` subclass, as
StreamForest's do: the templates ``simplestream`` and ``qwenvl-turns``, the user text and window
``simplestream``, and ``recent_frames`` (N), ``chunk_seconds``, ``layout`` (``one-block``: all frames'
tokens in one vision block; ``frame-blocks``: one block per frame), ``positions`` (``sequential`` or
``mrope``) and ``deepstack``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from stc_cli.benchmarks.base import Query
from stc_cli.protocols import texts
from stc_cli.protocols.base import CHOICES, Protocol

OWN_CHOICES = {
    "sampling": ("uniform_index",),  # a stc_cli/video.py rule only SimpleStream's protocols use
    "template": ("simplestream", "qwenvl-turns"),
    "user_text": ("simplestream",),
    "window": ("simplestream",),
    "layout": ("one-block", "frame-blocks"),
    "positions": ("sequential", "mrope"),
}
MODELS = ("qwen3vl", "qwen25vl")

# [SS] ovo_constants.py:15-35 (BR, REC, SSR, CRR templates), with lib/recent_window_eval.py:315-326
_OVO_BR = "{}\nOptions: {}\nOnly give the best option's letter directly."
_OVO_REC = "{}\nOnly give a number as answer."
_OVO_SSR = "Is this person performing the tutorial step: {}\nAnswer Yes or No only."
_OVO_CRR = (
    "{}\nIs there enough information in the provided video to answer the question? Answer Yes or No only."
)
# [SS] main_experiments/eval_streamingbench.py:39-47
_SB = (
    "You are an advanced video question-answering AI assistant. "
    "You have been provided with some frames from the video and a multiple-choice question. "
    "Your task is to analyze the video and provide the best answer.\n\n"
    "Question: {question}\n\n"
    "Options:\n{options}\n\n"
    "Only give the best option's letter (A, B, C, or D) directly."
)


def simplestream_text(query: Query) -> str:
    """SimpleStream's prompt for ``query``: OVO-Bench's per task ([SS] ``ovo_constants.py``, options on one
    line ``A. x; B. y;``), StreamingBench's multiple-choice template elsewhere (the demo included), options
    one per line with a letter unless they start with one ([SS] ``eval_streamingbench.py:58-73``)."""
    if query.bench == "ovo":
        if query.task == "REC":
            return _OVO_REC.format(f"How many times did they {query.extra['activity']}?")
        if query.task == "SSR":
            return _OVO_SSR.format(query.question)
        if query.task == "CRR":
            return _OVO_CRR.format(query.question)
        listed = "; ".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(query.options)) + ";"
        return _OVO_BR.format(query.question, listed)
    if not query.options:
        raise ValueError(f"{query.id}: the simplestream text needs options")
    lines = []
    for i, option in enumerate(query.options):
        text = str(option).strip()
        if not text.startswith(("A.", "B.", "C.", "D.")):
            text = f"{chr(65 + i)}. {text}"
        lines.append(text)
    return _SB.format(question=query.question, options="\n".join(lines))


@dataclass(frozen=True)
class QwenVLProtocol(Protocol):
    """A ``Protocol`` with SimpleStream's and the Qwen stream's settings."""

    recent_frames: int = 4  # N: the last N chunks a question sees (simplestream)
    chunk_seconds: float = 1.0  # the chunk a frame belongs to is int(time // chunk_seconds)
    layout: str = "frame-blocks"
    positions: str = "mrope"
    deepstack: bool = True

    def __post_init__(self):
        for name in ("layout", "positions"):
            if getattr(self, name) not in OWN_CHOICES[name]:
                raise ValueError(
                    f"{name} must be one of {', '.join(OWN_CHOICES[name])}, got {getattr(self, name)!r}"
                )
        if self.recent_frames < 1:
            raise ValueError(f"--last-frames must be >= 1, got {self.recent_frames}")
        if not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {self.chunk_seconds}")
        shared = {f.name: getattr(self, f.name) for f in fields(Protocol)}
        for name in ("sampling", "template", "user_text", "window"):
            if shared[name] in OWN_CHOICES[name]:
                shared[name] = CHOICES[name][0]  # the shared checks for everything else
        Protocol(**shared)

    def prepare(self, query: Query) -> Query:
        prompt = simplestream_text(query) if self.user_text == "simplestream" else None
        if prompt is None:
            prompt = texts.USER_TEXTS[self.user_text](query)
        if self.window == "simplestream":
            window = simplestream_window(query, self.recent_frames * self.chunk_seconds, self.chunk_seconds)
        else:
            window = texts.WINDOWS[self.window](query)
        return replace(query, prompt=prompt, window=window)


def simplestream_window(query: Query, seconds: float, chunk: float) -> tuple[float, float]:
    """StreamingBench under SimpleStream: only the last ``seconds`` before the question are decoded, from
    ``max(0, t - max(seconds, chunk))`` to ``t + 1e-4`` ([SS] ``eval_streamingbench.py:205-224``): the
    ``uniform_index`` rule keeps the frames up to ``floor(end * fps)``, where the 1e-4 s can add one."""
    end = query.window[1]
    return max(0.0, end - max(seconds, chunk)), end + 1e-4


_SS = "[SS]"
_OVO3 = "main_experiments/eval_qwen3vl_ovo.py"
_OVO25 = "main_experiments/eval_qwen25vl_ovo.py"
_SBE = "main_experiments/eval_streamingbench.py"
_LIB = "lib/recent_window_eval.py"
_QVU = "qwen-vl-utils 0.0.14 vision_process.py"


def _simplestream(model: str, bench: str, *, positions="sequential", deepstack=False, name="simplestream"):
    """SimpleStream's evaluation of ``model`` on ``bench`` (OVO-Bench, StreamingBench; the demo as
    StreamingBench)."""
    ovo = bench == "ovo"
    # one vision block for every frame, except Qwen3-VL's OVO-Bench builder: a block per frame
    layout = "frame-blocks" if (model == "qwen3vl" and ovo) or positions == "mrope" else "one-block"
    if ovo:
        script, first = (_OVO3, 157) if model == "qwen3vl" else (_OVO25, 158)
        args = {
            "recent_frames": f"{script}:{first}",
            "fps": f"{script}:{first + 2}",
            "tokens": f"{script}:{first + 3}",
        }
        builder = (
            "lib/recent_window_eval_qwen3.py:191-251 (a vision block per frame)"
            if model == "qwen3vl"
            else "lib/recent_window_eval_qwen25.py:69-128 (one vision block)"
        )
        window = ("window", f"{_SS} {script} reads OVO-Bench's pre-cut clips [0, ceil(realtime)] whole")
    else:
        args = {"fps": f"{_SBE}:308", "recent_frames": f"{_SBE}:311", "tokens": f"{_SBE}:310"}
        builder = f"{_LIB}:257-306 (one vision block, for both models)"
        window = ("window", f"{_SS} {_SBE}:205-224 (only the last N seconds before the question are decoded)")
    if positions == "mrope":
        layout_source = (
            "stc: a vision block per frame, each at its own 3-D positions, as the model's processor lays out "
            "images"
        )
        positions_source = (
            "stc: get_rope_index over the prompt (the model's own M-RoPE); not what upstream ran"
        )
        deepstack_source = "stc: the tower's deepstack features added to the LLM's first layers (Qwen3-VL)"
    else:
        layout_source = f"{_SS} {builder}"
        positions_source = (
            f"{_SS} {_LIB}:295-306 passes get_rope_index's positions to generate, which drops them: "
            "transformers 4.57.6 qwen3_vl/modeling_qwen3_vl.py:1407-1408 and 4.52.4 "
            "qwen2_5_vl/modeling_qwen2_5_vl.py:1980-1981 set position_ids = None; with inputs_embeds only, "
            "get_rope_index gives 0, 1, 2, ... (4.57.6 :1014-1033)"
        )
        deepstack_source = (
            f"{_SS} {_LIB}:171-182 keeps the merged tokens of get_image_features (4.57.6 qwen3_vl "
            "modeling_qwen3_vl.py:1050-1064 returns the deepstack features beside them) and generate gets "
            "inputs_embeds only: none reach the LLM"
        )
    comparable = {
        (
            "qwen3vl",
            "ovo",
        ): "SimpleStream's Qwen3-VL-8B OVO-Bench 81.4 / 54.0 real-time / backward ((RT+BW)/2 67.70)",
        ("qwen3vl", "streamingbench"): "SimpleStream's Qwen3-VL-8B StreamingBench 80.59 (real-time all)",
        ("qwen25vl", "ovo"): "SimpleStream's Qwen2.5-VL-7B OVO-Bench (RT+BW)/2 65.13",
        ("qwen25vl", "streamingbench"): "SimpleStream's Qwen2.5-VL-7B StreamingBench 78.47",
    }.get((model, bench), "nothing published: demo is stc's own smoke test")
    if name != "simplestream":
        comparable = (
            "not comparable with SimpleStream's numbers (3-D positions and deepstack, which upstream never "
            "ran)"
        )
    elif bench == "ovo":  # SimpleStream's README scores its OVO-Bench runs with OVO-Bench's own score.py
        comparable += ": stc score --mode official (OVO-Bench's score.py, as SimpleStream's README scores)"
    elif bench != "demo":
        comparable += ": stc score --mode official (SimpleStream's own answer reading)"
    return QwenVLProtocol(
        name=name,
        model=model,
        bench=bench,
        summary="SimpleStream: each question sees only the last N one-second chunks of its clip (N = 4), "
        "every frame an image, in one user turn; greedy up to 256 tokens",
        comparable=comparable,
        fps=1.0,
        sampling="uniform_index",
        max_frames=768,
        schedule="clip",
        window="benchmark" if bench != "streamingbench" else "simplestream",
        user_text="simplestream",
        template="simplestream",
        decoding="greedy",
        max_new_tokens=256,
        stop="eos",
        reading="as-is",
        scorer=_scorer(name, bench)[0],
        recent_frames=4,
        chunk_seconds=1.0,
        layout=layout,
        positions=positions,
        deepstack=deepstack,
        sources=(
            ("fps", f"{_SS} {args['fps']} (--fps 1.0) with {_QVU}:144-181 (smart_nframes)"),
            (
                "sampling",
                f"{_SS} {_LIB}:428-533 decodes the clip with {_QVU}:234-329,403-476 fetch_video (decord or "
                "torchcodec): native frames ceil(start * fps) to floor(end * fps), an even number of them, 1 "
                "per second, at least 4, at most 768, at linspace(first, last, n).round()",
            ),
            ("max_frames", f"{_QVU}:34 (FPS_MAX_FRAMES = 768)"),
            ("schedule", f"{_SS} {_LIB}:536-558 (every question decodes its own clip)"),
            window,
            ("user_text", f"{_SS} ovo_constants.py:15-35 with {_LIB}:315-326; {_SBE}:39-47,58-73"),
            (
                "template",
                f"{_SS} {_LIB}:273-285: <|im_start|>user\\n + the vision tokens + \\n + the question "
                "<|im_end|>\\n<|im_start|>assistant\\n, each piece tokenized on its own, no system turn",
            ),
            (
                "decoding",
                f"{_SS} {_LIB}:207-232 (generate, do_sample=False; the checkpoint's repetition_penalty)",
            ),
            ("max_new_tokens", f"{_SS} {args['tokens']} (--max_qa_tokens 256)"),
            ("stop", "the checkpoint's generation_config.json eos_token_id (<|im_end|>, <|endoftext|>)"),
            ("reading", f"{_SS} {_LIB}:228-232 (skip special tokens, strip)"),
            ("scorer", _scorer(name, bench)[1]),
            (
                "recent_frames",
                f"{_SS} {args['recent_frames']} and {_LIB}:557-561 (chunks[-N:], every frame of them)",
            ),
            ("chunk_seconds", f"{_SS} {_LIB}:512-517 (chunk = int(time // 1.0))"),
            ("layout", layout_source),
            ("positions", positions_source),
            ("deepstack", deepstack_source),
        ),
    )


def _scorer(name: str, bench: str) -> tuple[str, str]:
    """(mode, source) of the scorer SimpleStream's published numbers come from: on OVO-Bench, OVO-Bench's
    own score.py, which its README's scoring step runs (its run scripts also print a regex reading, which
    the README does not use); on StreamingBench, its own reading (``benchmarks/streamingbench.py``);
    robust where nothing was published to compare with."""
    if name != "simplestream" or bench == "demo":
        return "robust", "robust: no published numbers to compare with"
    if bench == "ovo":
        return "official", (
            f"{_SS} README.md:159-164 scores with scoring/score_ovo_bench.py, OVO-Bench's score.py inlined "
            "(the letter as a substring of the response; REC digits joined; SSR/CRR Yes/No)"
        )
    rule = (
        f"{_SBE}:83-117,225-228,256-270 with {_LIB}:329-339: the first lone A-D word of the upper-cased "
        "response, else a lone 1-4, equal to the answer; a failed question wrong, counted"
    )
    return "official", f"SimpleStream's: {_SS} {rule}"


def _stream(model: str, bench: str) -> QwenVLProtocol:
    return QwenVLProtocol(
        name="qwenvl-stream",
        model=model,
        bench=bench,
        summary="a live stream on a KV cache: one user turn per 1-second chunk (2 frames at 2 fps), the "
        "question one more turn, explicit 3-D positions for every segment",
        comparable="not comparable with published numbers (stc's streaming protocol for the Qwen-VL family)",
        fps=2.0,
        template="qwenvl-turns",
        decoding="greedy",
        max_new_tokens=256,
        stop="eos+im_end",
        reading="as-is",
        scorer="robust",
        layout="frame-blocks",
        positions="mrope",
        deepstack=True,
        sources=(
            (
                "fps",
                "stc: 2 fps, the Qwen-VL video processors' default; one temporal patch (2 frames) per chunk",
            ),
            (
                "template",
                "stc: LiveCC's loop (models/qwenvl_stream.py); Qwen3-VL writes each chunk as its processor "
                "writes a temporal patch, <t seconds><|vision_start|>...<|vision_end|>",
            ),
            ("max_new_tokens", f"as SimpleStream, {_SS} {_OVO3}:160"),
        ),
    )


PRESETS = tuple(
    protocol
    for model in MODELS
    for protocol in (
        *(_simplestream(model, bench) for bench in ("ovo", "streamingbench", "demo")),
        *(
            _simplestream(model, bench, positions="mrope", deepstack=True, name="simplestream-mrope")
            for bench in ("ovo", "streamingbench", "demo")
        ),
        *(
            _stream(model, bench)
            for bench in ("ovo", "streamingbench", "mlvu", "egoschema", "videomme", "demo")
        ),
    )
)  # the first preset of a (model, benchmark) pair is its default
