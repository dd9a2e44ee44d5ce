"""A tiny OVO-Bench data folder: metadata in the upstream shape, for the check and score tests."""

import json
from pathlib import Path

RECORDS = [
    {
        "id": 0,
        "task": "EPM",
        "video": "Ego4D/a.mp4",
        "realtime": 10,
        "question": "Who spoke?",
        "options": ["a man", "a woman", "a child", "nobody"],
        "gt": 1,
        "answer": "a woman",
    },
    {
        "id": 1,
        "task": "OCR",
        "video": "Ego4D/b.mp4",
        "realtime": 3.5,
        "question": "What does the sign say?",
        "options": ["STOP", "GO"],
        "gt": 0,
        "answer": "STOP",
    },
    {
        "id": 2,
        "task": "REC",
        "video": "perception_test/c.mp4",
        "activity": "jump",
        "start_times": [1],
        "end_times": [2],
        "test_info": [{"realtime": 2, "count": 1}, {"realtime": 5, "count": 1}],
    },
]


def write_ovo(data_dir: Path, records=RECORDS) -> Path:
    folder = data_dir / "ovo"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ovo_bench_new.json").write_text(json.dumps(records))
    return folder
