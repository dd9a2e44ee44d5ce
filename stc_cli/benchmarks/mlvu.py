"""MLVU dev, multiple choice: the 7 MC tasks of the official annotation files, headline M-Avg.

Layout under ``<data_dir>/mlvu/`` (the official release, github JUNJIE99/MLVU ``data/`` and HF ``MLVU/MVLU``):

- ``json/<k>_<task>.json``: a list of ``{video, duration, question, candidates, answer, question_type}``;
- ``video/<k>_<task>/<video>``.

Query ids are ``mlvu/<task>/<index of the record in its file>``; the model sees the whole video.
"""

from __future__ import annotations

import json
import math
import string
import warnings
from collections import Counter
from pathlib import Path

from stc_cli.benchmarks.base import (
    MetadataError,
    Query,
    ScoreReport,
    check_mode,
    check_time,
    judge,
    judge_stc,
    mean,
    percent,
)

NAME = "mlvu"
FOLDER = "mlvu"
CATEGORY = "MLVU-dev"
# The file stems of the 7 multiple-choice tasks (8_sub_scene and 9_summary are generation tasks).
TASK_FILES = (
    "1_plotQA",
    "2_needle",
    "3_ego",
    "4_count",
    "5_order",
    "6_anomaly_reco",
    "7_topic_reasoning",
)
TASKS = {stem.split("_", 1)[1]: CATEGORY for stem in TASK_FILES}
MODES = ("official", "robust", "stc")
COMPARABLE = {
    "official": "MLVU's check_ans, M-Avg over the 7 tasks: comparable with MLVU's own numbers",
    "stc": "the STC harness (extract_choice, micro over every question): comparable with the STC README's "
    "MLVU-dev column",
}
_FIELDS = ("video", "question", "candidates", "answer")


def prompt(question: str, candidates: list[str] | tuple[str, ...]) -> str:
    """The official MLVU multiple-choice user text for one question.

    Reproduces ``qa_template`` plus the ``"\\nOnly give the best option."`` suffix of
    [MLVU]``evaluation/multiple_choice_evaluation/choice_bench.py`` (the same template is in
    [MLVU]``Evaluation_Test/test_bench.py``, read at commit 2d80156). The options block is rstripped
    as upstream does. The model layer, not the query, adds the rest of the upstream turn: the
    ``<video>`` placeholder and newline before this text, the system prompt ("Carefully watch this
    video and pay attention to every detail. ...") and the assistant prefill ``"Best Option: ("``.
    """
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({string.ascii_uppercase[i]}) {c}" for i, c in enumerate(candidates)]
    return "\n".join(lines).rstrip() + "\nOnly give the best option."


def load_queries(data_dir: Path) -> list[Query]:
    """All MC questions of the 7 task files, in task order then file order.

    A record whose answer is not one of its candidates is dropped with a warning (upstream would
    score it against a letter no answer can match).

    Raises:
        MetadataError: a task file is missing or unreadable, or a record lacks a field.
    """
    folder = Path(data_dir) / FOLDER
    queries = []
    for stem in TASK_FILES:
        queries += _task_queries(folder / "json" / f"{stem}.json", stem)
    return queries


def _task_queries(path: Path, stem: str) -> list[Query]:
    if not path.is_file():
        raise MetadataError(path, "MLVU task file not found; `stc download mlvu` fetches the json/ files")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(path, f"cannot read it as JSON ({exc}); download it again") from exc
    if not isinstance(records, list):
        raise MetadataError(path, "expected a JSON list of question records")
    task = stem.split("_", 1)[1]
    queries = []
    for index, record in enumerate(records):
        missing = [f for f in _FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            raise MetadataError(path, f"missing field(s) {', '.join(missing)}", record=index)
        if not isinstance(record["candidates"], list) or not record["candidates"]:
            raise MetadataError(path, "candidates must be a non-empty list", record=index)
        if record.get("duration") is not None:  # recorded with each query: no NaN may reach samples.jsonl
            check_time(path, index, "duration", record["duration"])
        options = tuple(str(c) for c in record["candidates"])
        if str(record["answer"]) not in options:
            warnings.warn(
                f"{path}, record {index}: answer {record['answer']!r} is not one of its "
                "candidates; the question is left out",
                stacklevel=3,
            )
            continue
        queries.append(
            Query(
                id=f"{NAME}/{task}/{index}",
                bench=NAME,
                task=task,
                category=CATEGORY,
                video=f"video/{stem}/{record['video']}",
                window=(0.0, math.inf),
                prompt=prompt(record["question"], options),
                question=str(record["question"]),
                options=options,
                target=string.ascii_uppercase[options.index(str(record["answer"]))],
                extra={"duration": record.get("duration")},
            )
        )
    return queries


def check_ans(pred: str, letter: str) -> bool:
    """Upstream ``check_ans`` ([MLVU]``choice_bench.py``): with a ``)`` in the prediction, keep the
    one character before the first ``)``; then exact equality, no strip (``" A"`` and ``"A."`` are
    wrong, and so is ``")"``, whose slice is empty)."""
    if ")" in pred:
        cut = pred.index(")")
        pred = pred[cut - 1 : cut]
    return pred == letter


def score(records: list[dict], mode: str) -> ScoreReport:
    """Per-task accuracy and M-Avg, the macro mean over tasks, in percent.

    official: ``check_ans`` on the raw response; records with no response or a failed run are left
    out (``check_ans`` cannot take them) and counted. robust: ``extract_choice``; every record counts.
    M-Avg averages the tasks that have scored records, as upstream's ``final_res['Avg']`` averages
    the tasks it met; with all 7 present that is the 7-task macro. The micro accuracy is in the notes.
    stc: the STC harness's letter (``judge_stc``) and its number, the micro accuracy over every
    record ([STC] ``model/video_qa/eval/eval_multiple_choice.py`` averages ``qa_acc``).
    """
    check_mode(mode, MODES, NAME)
    right: dict[str, int] = {}
    counts: dict[str, int] = {}
    tally = Counter()
    for record in records:
        correct, status = judge_stc(record) if mode == "stc" else judge(record, mode, check_ans)
        tally[status] += 1
        if correct is None:
            continue
        counts[record["task"]] = counts.get(record["task"], 0) + 1
        right[record["task"]] = right.get(record["task"], 0) + correct
    order = [t for t in TASKS if t in counts] + [t for t in counts if t not in TASKS]
    tasks = {t: percent(right[t], counts[t]) for t in order}
    n_scored = sum(counts.values())
    micro = percent(sum(right.values()), n_scored)
    overall = micro if mode == "stc" else mean(tasks.values())
    notes = [
        f"M-Avg {mean(tasks.values()):.2f} (the macro mean over tasks); overall is the micro accuracy, as "
        "STC's harness reports it"
        if mode == "stc"
        else f"micro accuracy {micro:.2f} ({sum(right.values())} of {n_scored}); "
        "overall is M-Avg, the macro mean over tasks"
    ]
    if len(order) < len(TASKS):
        notes.append(f"only {len(order)} of {len(TASKS)} tasks have scored records")
    if mode == "official" and n_scored < len(records):
        notes.append(
            f"{len(records) - n_scored} record(s) with no response or a failed run left out of "
            "the denominators: upstream check_ans cannot score them"
        )
    return ScoreReport(
        bench=NAME,
        mode=mode,
        overall=overall,
        categories={CATEGORY: overall},
        tasks=tasks,
        n_total=len(records),
        n_scored=n_scored,
        n_unparsed=tally["unparsed"],
        n_missing=tally["missing"],
        n_errors=tally["error"],
        task_counts={t: counts[t] for t in order},
        notes=notes,
    )
