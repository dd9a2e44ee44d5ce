"""SimpleStream's own answer reading, what ``--mode official`` scores a ``simplestream`` StreamingBench run
with (its OVO-Bench runs are scored by OVO-Bench's score.py, as SimpleStream's README does). The
expectations (``tests/fixtures/simplestream_scoring.json``) come from running SimpleStream's matchers
([SS] ``lib/recent_window_eval.py:329-339``, ``main_experiments/eval_streamingbench.py:226-228`` at
be227ee) unchanged on these responses, in a scratch environment."""

import json
from pathlib import Path

import pytest

from stc_cli.benchmarks import streamingbench
from stc_cli.benchmarks.base import simplestream_choice

UPSTREAM = json.loads((Path(__file__).parents[1] / "fixtures" / "simplestream_scoring.json").read_text())


def one(target: str, response, error=None, protocol="simplestream") -> float:
    """The official StreamingBench score, in percent, of a single record."""
    record = {"id": "q", "task": "Counting", "target": target, "response": response, "error": error}
    return streamingbench.score([record], "official", protocol=protocol).overall


@pytest.mark.parametrize("case", UPSTREAM["letters"], ids=lambda case: repr(case["response"]))
def test_letters_are_read_as_simplestream_reads_them(case):
    assert simplestream_choice(case["response"]) == case["letter"]
    for target in "ABCD":
        assert one(target, case["response"]) == 100.0 * (target in case["streamingbench_right"])


def test_only_simplestream_runs_are_scored_so_and_failures_count_as_wrong():
    # count.py takes the first character: "B. A man" reads B either way; " A" reads " " there, A here
    assert one("A", " A", protocol=None) == 0.0 and one("A", " A") == 100.0
    records = [
        {"id": "a", "task": "Counting", "target": "A", "response": "A", "error": None},
        {"id": "b", "task": "Counting", "target": "A", "response": None, "error": "no such video"},
        {"id": "c", "task": "Counting", "target": "A", "response": "maybe", "error": None},
    ]
    report = streamingbench.score(records, "official", protocol="simplestream")
    assert (report.overall, report.n_scored, report.n_errors, report.n_unparsed) == (100 / 3, 3, 1, 1)
    assert streamingbench.score(records, "official").n_scored == 2  # count.py leaves the failure out
