"""ReKV (LLaVA-OneVision) protocols: the STC authors' released harnesses, and stc's earlier chat prompt.

[STC] is github lern-to-write/STC at 9b13ce0; paths under ``model/``. [OVO] is JoeLeelyf/OVO-Bench.
"""

from __future__ import annotations

from stc_cli.protocols.base import Protocol

_ANSWER = "llava_onevision_rekv.py question_answering"
# What the released ReKV + STC model does with any text it is given ([STC] model/llava_onevision_rekv.py).
_DECODING = {
    "template": f"[STC] {_ANSWER}: a str is prefilled as it is, no chat turn (:79-81, :107)",
    "max_new_tokens": "[STC] llava_onevision_rekv.py:72 (the default, which the online wrappers keep)",
    "stop": "[STC] llava_onevision_rekv.py:75 (eos_token_id only)",
    "first_token_rule": "[STC] llava_onevision_rekv.py:130-131",
    "cleanup": "[STC] llava_onevision_rekv.py:145-150 (clean_up_tokenization_spaces=True, transformers 4.x)",
    "decoding": "[STC] llava_onevision_rekv.py:105-143 (greedy: top-1 of each step)",
}
_STRIDE = "[STC] video_qa/base_refactored.py:27-30 (stride int(round(native fps) / fps))"
_SCHEDULE = "stc: one pass per video answers as one clip per query does (docs/protocols.md)"


def _online(bench: str, **settings) -> Protocol:
    return Protocol(
        name="stc-online",
        model="rekv",
        bench=bench,
        fps=1.0,
        retrieval="prompt",
        template="plain",
        max_new_tokens=128,
        stop="eos",
        first_token_rule=True,
        cleanup=True,
        **settings,
    )


STC_ONLINE_OVO = _online(
    "ovo",
    summary="ReKV + STC as the STC authors' released OVO-Bench harness runs it",
    comparable="the STC README's OVO-Bench rows (ReKV 64.4 / 64.6 / 52.6 real-time / backward / forward, "
    "+ STC 62.5 / 63.3 / 52.0): stc score --mode official",
    reading="last-line",
    scorer="official",
    sources=(
        ("fps", "[STC] online_bench_inference/ovobench/models/rekv.py:26,41 (sample_fps = 1)"),
        ("sampling", _STRIDE),
        ("schedule", _SCHEDULE),
        (
            "window",
            "[STC] ovobench/utils/OVOBench.py:35,97: clips cut at ceil(realtime) by [OVO] chunk_videos.py",
        ),
        ("user_text", "[STC] ovobench/utils/OVOBench.py:126-141 with constant.py (OVO-Bench's prompts)"),
        ("retrieval", "[STC] ovobench/models/rekv.py:52 passes the prompt as a str: it retrieves (:86-93)"),
        *_DECODING.items(),
        ("reading", "[STC] ovobench/models/rekv.py:53-54 (the last line of the stripped response)"),
        ("scorer", "[OVO] score.py (v2: mean of the three category means)"),
    ),
)
STC_ONLINE_STREAMINGBENCH = _online(
    "streamingbench",
    summary="ReKV + STC as the STC authors' released StreamingBench harness runs it",
    comparable="the STC README's StreamingBench column (ReKV 69.1, + STC 65.2): stc score --mode stc",
    reading="as-is",
    scorer="stc",
    sources=(
        ("fps", "[STC] online_bench_inference/streamingbench/src/model/rekv.py:24,44 (sample_fps = 1)"),
        ("sampling", _STRIDE),
        ("schedule", _SCHEDULE),
        ("window", "[STC] streamingbench/src/benchmark/StreamingBench.py:43-50: the clip [0, int(t))"),
        ("user_text", "[STC] streamingbench/src/benchmark/StreamingBench.py:52-59 (StreamingBench's prompt)"),
        ("retrieval", "[STC] streamingbench/src/model/rekv.py:52 passes the prompt as a str: it retrieves"),
        *_DECODING.items(),
        ("reading", "[STC] streamingbench/src/model/rekv.py:52-54 (the response as returned)"),
        ("scorer", "[STC] streamingbench/src/data/count.py:68-83 (strip, exact match, answered only)"),
    ),
)
STC_ONLINE_DEMO = _online(
    "demo",
    summary="the STC online harness's settings on stc's synthetic demo (as for StreamingBench)",
    comparable="nothing published: demo is stc's own smoke test",
    reading="as-is",
    scorer="robust",
    sources=(("fps", "as stc-online on ovo and streamingbench"), ("sampling", _STRIDE), *_DECODING.items()),
)


def _offline(bench: str, sources=(), **settings) -> Protocol:
    offline = "[STC] video_qa/rekv_offline_refactored.py"
    return Protocol(
        model="rekv",
        bench=bench,
        fps=0.5,
        retrieval="question",
        template="rekv-chat",
        max_new_tokens=16,
        stop="eos",
        first_token_rule=True,
        cleanup=True,
        reading="as-is",
        sources=(
            ("fps", "[STC] video_qa/run_distributed.py:159 (--sample_fps 0.5)"),
            ("sampling", _STRIDE),
            (
                "schedule",
                "[STC] video_qa/base_refactored.py:21-26: each video encoded once, then its questions",
            ),
            (
                "retrieval",
                f"{offline}:27-36 (the bare question retrieves, the formatted prompt is prefilled)",
            ),
            (
                "template",
                "[STC] llava_onevision_rekv.py:32-36 get_prompt: '\\n{q}<|im_end|><|im_start|>assistant\\n' "
                "+ 'Best option: ('",
            ),
            *{k: v for k, v in _DECODING.items() if k not in ("template", "max_new_tokens")}.items(),
            ("max_new_tokens", f"{offline}:33-36 (16 for multiple choice)"),
            ("scorer", "[STC] video_qa/base_refactored.py:82-88 extract_choice; eval/*.py average qa_acc"),
            *sources,
        ),
        **settings,
    )


_STC_MCQ = ("user_text", "[STC] video_qa/base_refactored.py:69-76 format_mcqa_prompt")
_OFFLINE_COMPARABLE = "the STC README's offline table ({}): stc score --mode stc"
STC_OFFLINE = tuple(
    _offline(
        bench,
        name="stc-offline",
        summary=f"ReKV + STC as the STC authors' released offline runner runs {title}",
        comparable=_OFFLINE_COMPARABLE.format(numbers),
        user_text="stc-mcq",
        scorer="stc",
        sources=(_STC_MCQ,),
    )
    for bench, title, numbers in (
        ("mlvu", "MLVU-dev", "ReKV 68.6, + STC-Pruner 67.6"),
        ("egoschema", "EgoSchema", "ReKV 57.7, + STC-Pruner 60.8; the 500-question subset"),
        ("videomme", "Video-MME", "ReKV 57.7, + STC-Pruner 57.1"),
    )
)
VIDEOMME_PROMPT = _offline(
    "videomme",
    name="videomme-prompt",
    summary="stc-offline with the official Video-MME prompt instead of the STC runner's template",
    comparable="not the STC README's numbers (another prompt); Video-MME's own scorer: "
    "stc score --mode official",
    user_text="benchmark",
    scorer="official",
    sources=(("user_text", "[Video-MME] README.md, 'Prompt'"),),
)


def _chat(bench: str) -> Protocol:
    return Protocol(
        name="rekv-chat",
        model="rekv",
        bench=bench,
        summary="stc's earlier ReKV protocol: the prompt in a chat turn, 'Best option: (' for multiple "
        "choice",
        comparable="not comparable with published numbers (another prompt, frame rate and decoding)",
        fps=0.5,
        retrieval="prompt",
        template="rekv-chat",
        max_new_tokens=16,
        stop="eos+im_end",
        first_token_rule=True,
        reading="as-is",
        scorer="robust",
        sources=(("sampling", _STRIDE),),
    )


PRESETS = (
    STC_ONLINE_OVO,
    STC_ONLINE_STREAMINGBENCH,
    STC_ONLINE_DEMO,
    *STC_OFFLINE,
    VIDEOMME_PROMPT,
    *(_chat(bench) for bench in ("ovo", "streamingbench", "demo")),
)  # the first preset of a (model, benchmark) pair is its default
