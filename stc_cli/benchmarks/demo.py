"""The demo benchmark shipped with stc: 16 synthetic clips of 8 to 12 seconds (a coloured square on a
grey frame that moves or not and changes colour 0 to 3 times) and 64 four-option questions whose answers
follow from each clip's script (``demo_scenes.py`` draws them, ``scripts/make_demo_data.py`` writes
them). It shows every command working on any machine: ``stc download demo`` copies it from the package,
no network needed.

Six tasks in three categories (``TASKS``), 8 or 12 questions each: real-time (``color``, ``position``:
the square now, at a time inside the clip), backward (``start_color``, ``start_position``: the square at
the start, asked at the end) and counting/order (``changes``: how many colour changes; ``direction``:
which way it moves; asked at the end). The answer letters are A, B, C and D equally often within each
task, so a constant answer scores 25 %.

Layout under ``<data_dir>/demo/``: ``demo.json`` (``{id, video, task, time, question, options,
answer}``) and ``videos/clip_<n>.mp4``. Query ids are ``demo/clip_<n>/<k>``; the model may see the clip
up to ``time`` seconds. There is no upstream scorer: both modes score the letter ``extract_choice``
reads, over every query; a category's accuracy is over its questions (micro), like the overall one.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from stc_cli.benchmarks.base import (
    MetadataError,
    Query,
    ScoreReport,
    check_mode,
    check_time,
    judge_choice,
    percent,
)

NAME = "demo"
FOLDER = "demo"
METADATA = "demo.json"
PACKAGED = Path(__file__).resolve().parent.parent / "data" / "demo"
# Task -> category. The first three are the tasks of the demo's first version (3 clips, 12 questions),
# whose metadata still loads.
TASKS = {
    "color": "real-time",
    "direction": "counting/order",
    "position": "real-time",
    "start_color": "backward",
    "start_position": "backward",
    "changes": "counting/order",
}
CATEGORIES = ("real-time", "backward", "counting/order")  # in display order
_FIELDS = {
    "id": str,
    "video": str,
    "task": str,
    "time": (int, float),
    "question": str,
    "options": list,
    "answer": str,
}


def prompt(question: str, options: list[str]) -> str:
    lines = [f"Question: {question}", "Options:"] + [f"{'ABCD'[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines + ["Answer with the option's letter."])


def load_queries(data_dir: Path) -> list[Query]:
    """The demo's queries. Raises MetadataError when ``demo.json`` is missing or malformed."""
    path = Path(data_dir) / FOLDER / METADATA
    if not path.is_file():
        raise MetadataError(path, "demo metadata not found; `stc download demo` puts it there")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(path, f"not valid JSON ({exc}); run `stc download demo` again") from exc
    queries = []
    for index, record in enumerate(records if isinstance(records, list) else [None]):
        bad = [
            k
            for k, kind in _FIELDS.items()
            if not isinstance(record, dict) or not isinstance(record.get(k), kind)
        ]
        if bad or record["task"] not in TASKS or record["answer"] not in "ABCD"[: len(record["options"])]:
            raise MetadataError(path, f"malformed record (check {bad or ['task', 'answer']})", record=index)
        queries.append(
            Query(
                id=f"{NAME}/{record['id']}",
                bench=NAME,
                task=record["task"],
                category=TASKS[record["task"]],
                video=record["video"],
                window=(0.0, check_time(path, index, "time", record["time"])),
                prompt=prompt(record["question"], record["options"]),
                question=record["question"],
                options=tuple(record["options"]),
                target=record["answer"],
            )
        )
    return queries


def score(records: list[dict], mode: str) -> ScoreReport:
    """Micro accuracy overall, per category and per task (percent), missing, failed and unparsed answers
    wrong."""
    check_mode(mode, bench=NAME)
    right, total, status = Counter(), Counter(), Counter()
    for record in records:
        correct, state = judge_choice(record)
        status[state] += 1
        right[record["task"]] += correct
        total[record["task"]] += 1
    tasks = {task: percent(right[task], total[task]) for task in TASKS if total[task]}
    overall = percent(sum(right.values()), len(records))
    categories = {}
    for category in CATEGORIES:
        members = [task for task in TASKS if TASKS[task] == category and total[task]]
        if members:
            categories[category] = percent(sum(right[t] for t in members), sum(total[t] for t in members))
    return ScoreReport(
        bench=NAME,
        mode=mode,
        overall=overall,
        categories=categories,
        tasks=tasks,
        n_total=len(records),
        n_scored=len(records),
        n_unparsed=status["unparsed"],
        n_missing=status["missing"],
        n_errors=status["error"],
        task_counts={task: total[task] for task in tasks},
        notes=["the demo has no upstream scorer: both modes read answers with the robust extractor"],
    )
