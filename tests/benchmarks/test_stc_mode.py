"""``--mode stc``: the STC authors' offline scoring (extract_choice, every question counts), MLVU,
EgoSchema and Video-MME alike."""

import pytest

from stc_cli.benchmarks import egoschema, mlvu, ovo, videomme
from stc_cli.benchmarks.base import stc_choice


@pytest.mark.parametrize(
    ("response", "letter"),
    [("(A) red", "A"), ("B) yes", "B"), ("  C. the dog", "C"), ("", "A"), (")", "")],
)
def test_stc_choice_is_the_harness_letter(response, letter):
    # the character before the first ")", else the first; "" becomes "A"; ")" gives "" (nothing before it)
    assert stc_choice(response) == letter


def record(task, target, response, error=None, category="c"):
    return {"task": task, "category": category, "target": target, "response": response, "error": error}


RECORDS = [
    record("plotQA", "A", "(A) red"),  # right
    record("plotQA", "B", ""),  # "" reads as "A": wrong
    record("needle", "B", "B) yes"),  # right
    record("needle", "C", "C"),  # right
    record("needle", "D", None, error="CUDA out of memory"),  # counts, wrong
]


def test_mlvu_stc_is_the_micro_accuracy_over_every_question():
    report = mlvu.score(RECORDS, "stc")
    assert report.tasks == {"plotQA": 50.0, "needle": pytest.approx(200 / 3)}
    assert report.overall == 60.0 and report.n_scored == 5  # 3 of 5, not the macro 58.33
    assert report.notes[0].startswith("M-Avg 58.33")


def test_videomme_stc_counts_every_question_by_duration_and_task():
    records = [
        {**r, "category": duration}
        for r, duration in zip(RECORDS, ["short", "short", "long", "long", "long"], strict=True)
    ]
    report = videomme.score(records, "stc")
    assert report.overall == 60.0 and report.categories == {"short": 50.0, "long": pytest.approx(200 / 3)}


def test_egoschema_stc_counts_failures_where_official_leaves_them_out():
    records = [{**r, "task": "egoschema"} for r in RECORDS]
    assert (egoschema.score(records, "stc").overall, egoschema.score(records, "official").overall) == (
        60.0,
        75.0,
    )


def test_ovo_has_no_stc_mode():
    with pytest.raises(ValueError, match="--mode stc is not defined for ovo; use one of official, robust"):
        ovo.score(RECORDS, "stc")
