"""The user texts and windows a protocol can give a query, besides the benchmark's own.

- ``stc-mcq``: the STC authors' offline runner ([STC] ``model/video_qa/base_refactored.py:69-76``,
  ``format_mcqa_prompt``), for MLVU, EgoSchema and Video-MME alike.
- ``livecc-ovo``: LiveCC's rewrite of OVO-Bench ([LiveCC] ``evaluation/ovobench/
  transfer_annotation_format.py``, typos included, and ``distributed_evaluate_ovobench.py:94,135``),
  with its windows: from 0 (CRR: from ``ask_time``) to the question's ``realtime``, not its ceiling.
"""

from __future__ import annotations

from stc_cli.benchmarks.base import Query

LETTERS = "ABCDEFGH"  # [STC] base_refactored.py:13, choice_letters

_LIVECC_REC = (
    "You're watching a video in which people may perform a certaintype of action repetitively. The person "
    "performing are referred to as 'they' in the following statement. You're task is to count how many "
    "times did different people in the video perform this kind of action in total.\n"
    "Now, answer the following question:\n\nHow many times did they {}?\n\n"
    "Your response type should be INT, for example, 0/1/2/3.."
)
_LIVECC_SSR = (
    "You're watching a tutorial video which contain a sequential of steps. The following is one step from "
    "the whole procedures:\n\n{}\n\nYour task is to decide: Is the man/woman in the video currently "
    'carrying out this step?\nReturn "Yes" if the man/woman in the video is currently performing this '
    'step;\nReturn "No" if not.'
)
_LIVECC_CRR = (
    "You're responsible of answering questions based on the video content. The following question are "
    "relevant to the latest frames, i.e. the end of the video.\n\n{}\n\nDecide whether existing visual "
    "content, especially latest frames, i.e frames that near the end of the video, provide enough "
    'information for answering the question.\nReturn "Yes" if existing visual content has provided '
    'enough information;\nReturn "No" otherwise.'
)
_LIVECC_MCQ_END = "\nPlease select the correct answer."


def stc_mcq(query: Query) -> str:
    """``Question: q\\nOptions:\\n(A) x\\n(B) y\\nOnly give the best option.``; options as the
    benchmark gives them (Video-MME's keep their own ``A.``, as in STC's ``new_videomme.json``)."""
    _need_options(query, "stc-mcq")
    choices = "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(query.options))
    return f"Question: {query.question}\nOptions:\n{choices}\nOnly give the best option."


def livecc_ovo(query: Query) -> str:
    """LiveCC's OVO-Bench text for ``query`` (an OVO-Bench query)."""
    _need_ovo(query, "livecc-ovo")
    if query.task == "REC":
        return _LIVECC_REC.format(query.extra["activity"])
    if query.task == "SSR":
        return _LIVECC_SSR.format(query.question)
    if query.task == "CRR":
        return _LIVECC_CRR.format(query.question)
    options = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(query.options))
    return f"{query.question}\n{options}{_LIVECC_MCQ_END}"


def livecc_ovo_window(query: Query) -> tuple[float, float]:
    """``(start, realtime)``: from 0, or from ``ask_time`` for CRR ([LiveCC]
    ``transfer_annotation_format.py:8``); the sampling rule extends a window under one second."""
    _need_ovo(query, "livecc-ovo")
    start = 0.0
    if query.task == "CRR":
        if query.extra.get("ask_time") is None:
            raise ValueError(f"{query.id}: a CRR record without ask_time; the livecc-ovo protocol needs it")
        start = float(query.extra["ask_time"])
    return start, float(query.extra["realtime"])


def _need_options(query: Query, name: str) -> None:
    if not query.options or len(query.options) > len(LETTERS):
        raise ValueError(f"{query.id}: the {name} text needs 1 to {len(LETTERS)} options")


def _need_ovo(query: Query, name: str) -> None:
    if query.bench != "ovo":
        raise ValueError(f"{query.id}: the {name} protocol is for OVO-Bench queries only")


USER_TEXTS = {
    "benchmark": lambda query: query.prompt,
    "stc-mcq": stc_mcq,
    "livecc-ovo": livecc_ovo,
}
WINDOWS = {
    "benchmark": lambda query: query.window,
    "livecc-ovo": livecc_ovo_window,
}
