"""EgoSchema: 3-minute egocentric clips, one 5-way question each; the public subset of 500 is scored
here, the full 5031 only by the EgoSchema validation server.

Layout under ``<data_dir>/egoschema/`` (HF dataset ``lmms-eval/egoschema``, formerly ``lmms-lab/egoschema``):

- ``Subset/test-00000-of-00001.parquet``: the 500 questions with answers;
- ``MC/test-00000-of-00001.parquet``: all 5031 questions, answers hidden;
- ``videos/<video_idx>.mp4``.

Parquet columns: ``video_idx`` (the q_uid the server keys on), ``question``, ``option`` (5 strings
``"A. ..."``), ``answer`` (the option index, an int or a digit string), ``question_idx``.
Query ids are ``egoschema/<video_idx>``: one question per clip, and the same key in both files.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections import Counter
from pathlib import Path

from stc_cli.benchmarks.base import (
    MetadataError,
    Query,
    ScoreReport,
    check_mode,
    judge,
    judge_stc,
    percent,
    response_status,
    stc_choice,
)
from stc_cli.benchmarks.extract import LETTERS, extract_choice

NAME = "egoschema"
FOLDER = "egoschema"
CATEGORY = "EgoSchema"
TASKS = {"egoschema": CATEGORY}
MODES = ("official", "robust", "stc")
COMPARABLE = {
    "official": "the STC harness's letter over answered questions (EgoSchema has no local scorer)",
    "stc": "the STC harness (extract_choice over every question): comparable with the STC README's "
    "EgoSchema column (the 500-question subset)",
}
SPLITS = {
    "subset": "Subset/test-00000-of-00001.parquet",
    "full": "MC/test-00000-of-00001.parquet",
}
SUBMIT_HELP = (
    "EgoSchema full-set answers are hidden: stc never reports a full-set score itself. Submit the "
    "file by POSTing it as JSON to the EgoSchema validation server, e.g.\n"
    "  curl -X POST -H 'Content-Type: application/json' --data @submission.json "
    "https://validation-server.onrender.com/api/upload/\n"
    "(or python validate.py --f submission.json from github egoschema/EgoSchema). The reply gives "
    "the accuracy on all 5031 questions and on the 500 public ones. The server is sometimes down "
    "(HTTP 500): keep the file and try again later."
)


def prompt(question: str, options: list[str] | tuple[str, ...]) -> str:
    """The ReKV/STC multiple-choice text (``format_mcqa_prompt`` in
    [STC]``model/video_qa/base_refactored.py``); ``options`` without their ``A.`` labels.

    The model layer adds the chat template and the assistant prefill ``"Best option: ("``.
    """
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({LETTERS[i]}) {option}" for i, option in enumerate(options)]
    return "\n".join(lines + ["Only give the best option."])


def load_queries(data_dir: Path, split: str = "subset") -> list[Query]:
    """The questions of one split, in file order.

    Args:
        data_dir: the data directory holding the ``egoschema`` folder.
        split: ``"subset"`` (500 questions with answers) or ``"full"`` (5031, target ``""``).

    Raises:
        MetadataError: the parquet file is missing or unreadable, or a row is malformed.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown EgoSchema split {split!r}; use one of {', '.join(SPLITS)}")
    path = Path(data_dir) / FOLDER / SPLITS[split]
    if not path.is_file():
        raise MetadataError(path, "not found; `stc download egoschema` fetches it from lmms-eval/egoschema")
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:
        raise MetadataError(path, f"cannot read it as parquet ({exc}); download it again") from exc
    needed = ["video_idx", "question", "option"] + (["answer"] if split == "subset" else [])
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise MetadataError(path, f"missing column(s) {', '.join(missing)}")
    queries, seen = [], set()
    for index, row in enumerate(frame.to_dict("records")):
        q_uid = str(row["video_idx"])
        if q_uid in seen:
            raise MetadataError(path, f"video_idx {q_uid} appears twice", record=index)
        seen.add(q_uid)
        options = _options(row["option"], path, index)
        question_idx = row.get("question_idx")
        target = LETTERS[_answer_index(row["answer"], path, index)] if split == "subset" else ""
        queries.append(
            Query(
                id=f"{NAME}/{q_uid}",
                bench=NAME,
                task="egoschema",
                category=CATEGORY,
                video=f"videos/{q_uid}.mp4",
                window=(0.0, math.inf),
                prompt=prompt(str(row["question"]), options),
                question=str(row["question"]),
                options=options,
                target=target,
                extra={
                    "q_uid": q_uid,
                    "question_idx": None if question_idx is None else str(question_idx),
                    "split": split,
                },
            )
        )
    return queries


def _options(value, path: Path, index: int) -> tuple[str, ...]:
    """The 5 option texts with their own ``"A. "`` labels removed."""
    if value is None or isinstance(value, str) or len(value) != len(LETTERS):
        raise MetadataError(path, f"option must hold {len(LETTERS)} strings", record=index)
    return tuple(
        re.sub(rf"^{letter}\.\s*", "", str(text).strip()) for letter, text in zip(LETTERS, value, strict=True)
    )


def _answer_index(value, path: Path, index: int) -> int:
    """The answer as an option index: the HF files give an int or a digit string."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, numbers.Integral) and 0 <= value < len(LETTERS):
        return int(value)
    raise MetadataError(path, f"answer {value!r} is not an option index 0-4", record=index)


def score(records: list[dict], mode: str) -> ScoreReport:
    """Subset accuracy (micro, percent).

    official: ``stc_choice`` (the STC harness, [STC]``model/video_qa/base_refactored.py``
    ``extract_choice``) compared with the answer letter; records with no response or a failed run
    are left out and counted. stc: the same letter, every record counting (``judge_stc``). robust:
    ``extract_choice``; every record counts.

    Raises:
        ValueError: a record has no target (full set): its answers are hidden.
    """
    check_mode(mode, MODES, NAME)
    hidden = sum(1 for record in records if not record.get("target"))
    if hidden:
        raise ValueError(
            f"{hidden} EgoSchema record(s) have no answer: full-set answers are hidden. "
            "Write a submission with egoschema.write_submission and submit it.\n" + SUBMIT_HELP
        )
    right = scored = 0
    tally = Counter()
    for record in records:
        correct, status = judge_stc(record) if mode == "stc" else judge(record, mode, _official)
        tally[status] += 1
        if correct is not None:
            scored += 1
            right += correct
    overall = percent(right, scored)
    notes = [f"{right} of {scored} right"]
    if mode == "official" and scored < len(records):
        notes.append(
            f"{len(records) - scored} record(s) with no response or a failed run left out of "
            "the denominator: the STC harness cannot score them"
        )
    return ScoreReport(
        bench=NAME,
        mode=mode,
        overall=overall,
        categories={CATEGORY: overall},
        tasks={"egoschema": overall},
        n_total=len(records),
        n_scored=scored,
        n_unparsed=tally["unparsed"],
        n_missing=tally["missing"],
        n_errors=tally["error"],
        task_counts={"egoschema": scored},
        notes=notes,
    )


def _official(text: str, target: str) -> bool:
    return stc_choice(text) == target


def write_submission(records: list[dict], path: Path | str) -> dict:
    """Write the validation server's JSON, ``{q_uid: option index}``, for the records whose response
    ``extract_choice`` reads; the others are left out, never guessed.

    Returns:
        Counts: ``written``, ``unparsed`` (answered, no letter found) and ``missing`` (no response
        or a failed run).
    """
    submission, counts = {}, {"written": 0, "unparsed": 0, "missing": 0}
    for record in records:
        if response_status(record) != "answered":
            counts["missing"] += 1
            continue
        choice = extract_choice(record["response"], record["options"])
        if choice is None:
            counts["unparsed"] += 1
            continue
        submission[record["extra"]["q_uid"]] = LETTERS.index(choice)
        counts["written"] += 1
    Path(path).write_text(json.dumps(submission, indent=1) + "\n", encoding="utf-8")
    return counts
