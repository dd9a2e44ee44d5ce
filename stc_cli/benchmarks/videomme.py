"""Video-MME (CVPR 2025): 2700 four-option questions on 900 videos, 300 each short, medium and long.

Layout under ``<data_dir>/videomme/`` (Hugging Face dataset ``lmms-eval/Video-MME``, formerly
``lmms-lab/Video-MME``):

- ``videomme/test-00000-of-00001.parquet``: one row per question;
- ``data/<videoID>.mp4``: the videos (unzipped from ``videos_chunked_NN.zip``);
- ``subtitle/<videoID>.srt``: subtitles of 744 of the videos (from ``subtitle.zip``), read only with
  ``subtitles=True``.

Query categories are the video durations. Every task type occurs at every duration, so ``TASKS`` maps each
task to ``"all"``; reports break accuracy down by duration (``categories``, in ``DURATIONS`` order) and by
task type (``tasks``), as the official scorer does. There is no upstream result format to import: the
official template JSON (``evaluation/output_test_template.json``) is not supported.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from stc_cli.benchmarks.base import (
    MetadataError,
    Query,
    ScoreReport,
    check_mode,
    judge_stc,
    percent,
    response_status,
)
from stc_cli.benchmarks.extract import LETTERS, extract_choice, first_text

NAME = "videomme"
FOLDER = "videomme"
METADATA = "videomme/test-00000-of-00001.parquet"
DURATIONS = ("short", "medium", "long")
N_QUESTIONS = 2700
MODES = ("official", "robust", "stc")
COMPARABLE = {
    "official": "Video-MME's eval_your_results.py: comparable with the Video-MME leaderboard",
    "stc": "the STC harness (extract_choice over every question): comparable with the STC README's "
    "Video-MME column",
}

# The 12 task types, in the order of TASK_CATEGORIES in eval_your_results.py (thanku-all/parse_answer).
TASKS = {
    task: "all"
    for task in (
        "Temporal Perception",
        "Spatial Perception",
        "Attribute Perception",
        "Action Recognition",
        "Object Recognition",
        "OCR Problems",
        "Counting Problem",
        "Temporal Reasoning",
        "Spatial Reasoning",
        "Action Reasoning",
        "Object Reasoning",
        "Information Synopsis",
    )
}

_COLUMNS = ("question_id", "duration", "domain", "sub_category", "videoID", "task_type", "question")
_COLUMNS += ("options", "answer")

# The prompt of MME-Benchmarks/Video-MME README.md ("Prompt" section), as its two examples write it: the
# template line above them carries trailing spaces that the examples do not.
_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
_SUBTITLE_HEADER = "This video's subtitles are listed below:"
_ANSWER_CUE = "The best answer is:"

# The answer prefixes that eval_your_results.py (thanku-all/parse_answer, linked from the Video-MME README;
# read in its fork deeplearning-LI/parse_answer) deletes with str.replace. Two commas are missing there, so
# Python joins two pairs of literals, and "The best option is", "The correct option is", "Best answer:"
# and "Best option:" are never removed: "Best option: C" scores as "B", from "Best". Reproduced on purpose.
_OFFICIAL_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
)
# The list as it was meant to be: only used to count, in a note, the answers the bug changes.
_INTENDED_PREFIXES = _OFFICIAL_PREFIXES[:4] + (
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)


def load_queries(data_dir: Path, subtitles: bool = False, tasks=None) -> list[Query]:
    """Read the Video-MME questions, in file order.

    Args:
        data_dir: the data directory; the benchmark lives in ``<data_dir>/videomme``.
        subtitles: prepend the video's subtitles to the prompt (the "w/ subs" setting). A video without
            an .srt file gets no subtitle block and a warning.
        tasks: task types to keep (``TASKS`` keys); None keeps all.

    Returns:
        One query per question, with id ``videomme/<question_id>``, the whole video as its window (seconds).

    Raises:
        MetadataError: the parquet file is missing, unreadable, lacks a column or holds a bad row.
        ValueError: ``tasks`` names an unknown task type.
    """
    import pandas as pd

    root = Path(data_dir) / FOLDER
    path = root / METADATA
    if not path.is_file():
        raise MetadataError(
            path, "Video-MME metadata not found; `stc download videomme` fetches it from lmms-eval/Video-MME"
        )
    unknown = sorted(set(tasks or ()) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown Video-MME task type(s) {unknown}; choose from {list(TASKS)}")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise MetadataError(path, f"cannot read the parquet file ({exc}); download it again") from exc
    missing = [column for column in _COLUMNS if column not in frame.columns]
    if missing:
        raise MetadataError(path, f"missing column(s) {missing}; expected the lmms-eval/Video-MME parquet")

    queries, seen, subtitle_texts = [], set(), {}
    for index, row in enumerate(frame.to_dict("records")):
        query = _query(row, path)
        if query.id in seen:
            raise MetadataError(path, "duplicate question_id; the file is corrupt, download it again", index)
        seen.add(query.id)
        if tasks is not None and query.task not in tasks:
            continue
        if subtitles:
            query = _with_subtitles(query, root, row, subtitle_texts)
        queries.append(query)
    return queries


def build_prompt(question: str, options: tuple[str, ...], subtitles: str | None = None) -> str:
    """The official Video-MME prompt; ``options`` already carry their ``A.`` labels."""
    lines = [_INSTRUCTION, question, *options, _ANSWER_CUE]
    return "\n".join(lines if subtitles is None else [_SUBTITLE_HEADER, subtitles, *lines])


def subtitle_text(path: Path) -> str:
    """The text lines of an .srt file, in order, without cue numbers, timings, blank lines or HTML tags
    (Video-MME wraps each line in ``<font ...>``)."""
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").strip()
    lines = []
    for block in re.split(r"\n\s*\n", text):
        rows = block.split("\n")
        if rows and rows[0].strip().isdigit():
            rows = rows[1:]
        if rows and "-->" in rows[0]:
            rows = rows[1:]
        lines += [line for line in (re.sub(r"<[^>]+>", "", row).strip() for row in rows) if line]
    return "\n".join(lines)


def official_choice(response) -> str:
    """The letter the official Video-MME scorer reads from a response, or ``""`` when it skips it.

    eval_your_results.py ``extract_characters_regex``: strip, delete the (buggy) prefixes, then take the
    first of A-D anywhere in what is left. Upstream first returns "" for more than 10 words without a
    letter among A-D, which the search returns anyway, so that rule changes nothing. A list response is
    read through its first element (upstream would crash on it).
    """
    return _first_letter(first_text(response) or "", _OFFICIAL_PREFIXES)


def score(records: list[dict], mode: str) -> ScoreReport:
    """Micro accuracy (percent) overall, per duration and per task type.

    ``official``: eval_your_results.py; answers it skips (no letter found), missing and failed responses
    leave the denominator. ``robust``: ``extract_choice``; every record counts, unanswered ones as wrong.
    ``stc``: the STC harness's letter (``judge_stc``), every record counting, as the STC README's number.
    """
    check_mode(mode, MODES, NAME)
    by_duration, by_task = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    status_counts = {"answered": 0, "missing": 0, "error": 0}
    n_unparsed = 0
    for record in records:
        status = response_status(record)
        status_counts[status] += 1
        duration, task = by_duration[record["category"]], by_task[record["task"]]
        if mode == "stc":
            right = judge_stc(record)[0]
        else:
            choice = _choice(record, mode) if status == "answered" else None
            n_unparsed += status == "answered" and choice is None
            if mode == "official" and choice is None:
                continue
            right = choice == record["target"]
        for tally in (duration, task):
            tally[0] += right
            tally[1] += 1
    correct, scored = (sum(tally[i] for tally in by_duration.values()) for i in (0, 1))
    return ScoreReport(
        bench=NAME,
        mode=mode,
        overall=percent(correct, scored),
        categories={d: percent(*by_duration[d]) for d in _ordered(by_duration, DURATIONS)},
        tasks={t: percent(*by_task[t]) for t in _ordered(by_task, TASKS)},
        n_total=len(records),
        n_scored=scored,
        n_unparsed=n_unparsed,
        n_missing=status_counts["missing"],
        n_errors=status_counts["error"],
        task_counts={t: by_task[t][1] for t in _ordered(by_task, TASKS)},
        notes=_notes(records, mode, len(records) - scored, n_unparsed),
    )


def _query(row: dict, path: Path) -> Query:
    qid = str(row["question_id"])
    if row["duration"] not in DURATIONS:
        raise MetadataError(path, f"duration {row['duration']!r} is not one of {DURATIONS}", qid)
    if row["task_type"] not in TASKS:
        raise MetadataError(path, f"task_type {row['task_type']!r} is not a Video-MME task type", qid)
    if isinstance(row["options"], str) or not hasattr(row["options"], "__len__"):
        raise MetadataError(path, f"options must be a list like ['A. ...', ...], got {row['options']!r}", qid)
    options = tuple(str(option) for option in row["options"])
    if row["answer"] not in tuple(LETTERS[: len(options)]):
        raise MetadataError(
            path, f"answer {row['answer']!r} is not a letter of the {len(options)} options", qid
        )
    return Query(
        id=f"{NAME}/{qid}",
        bench=NAME,
        task=row["task_type"],
        category=row["duration"],
        video=f"data/{row['videoID']}.mp4",
        window=(0.0, math.inf),
        prompt=build_prompt(str(row["question"]), options),
        question=str(row["question"]),
        options=options,
        target=row["answer"],
        extra={key: row[key] for key in ("duration", "domain", "sub_category", "videoID")},
    )


def _with_subtitles(query: Query, root: Path, row: dict, cache: dict) -> Query:
    # The official protocol keeps only the subtitles at the sampled frame times (Video-MME README,
    # "Extract Frames and Subtitles"), which depends on the frames the model samples: that selection is
    # left to the model layer, and the prompt here carries the whole file's text.
    video_id = row["videoID"]
    if video_id not in cache:
        srt = root / "subtitle" / f"{video_id}.srt"
        cache[video_id] = subtitle_text(srt) if srt.is_file() else None
        if cache[video_id] is None:
            message = f"{srt}: no subtitle file; the questions on video {video_id} get no subtitles"
            warnings.warn(message, stacklevel=3)
    subs = cache[video_id]
    prompt = build_prompt(str(row["question"]), query.options, subs)
    extra = {**query.extra, "subtitles": subs is not None}
    return replace(query, prompt=prompt, extra=extra)


def _first_letter(text: str, prefixes: tuple[str, ...]) -> str:
    text = text.strip()
    for prefix in prefixes:
        text = text.replace(prefix, "")
    match = re.search("[ABCD]", text)
    return match.group() if match else ""


def _choice(record: dict, mode: str) -> str | None:
    if mode == "official":
        return official_choice(record["response"]) or None
    return extract_choice(record["response"], record["options"])


def _ordered(keys, order) -> list[str]:
    return [key for key in order if key in keys] + sorted(key for key in keys if key not in order)


def _notes(records: list[dict], mode: str, n_excluded: int, n_unparsed: int) -> list[str]:
    notes = []
    if len(records) != N_QUESTIONS:
        notes.append(
            f"Video-MME has {N_QUESTIONS} questions (300 videos per duration); these records hold "
            f"{len(records)}: the official scorer refuses partial runs"
        )
    if mode != "official":
        return notes
    if n_excluded:
        notes.append(
            f"{n_excluded} record(s) left the denominator as in eval_your_results.py: {n_unparsed} answer(s) "
            "with no letter A-D after prefix removal, the rest missing or failed"
        )
    texts = [first_text(r["response"]) or "" for r in records if response_status(r) == "answered"]
    changed = sum(official_choice(t) != _first_letter(t, _INTENDED_PREFIXES) for t in texts)
    if changed:
        notes.append(
            f"{changed} answer(s) read differently because of the upstream missing-comma bug in the "
            "prefix list ('Best option: C' scores as 'B'); reproduced as upstream does"
        )
    return notes
