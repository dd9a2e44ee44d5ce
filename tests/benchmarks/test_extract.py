import pytest

from stc_cli.benchmarks.extract import extract_choice, extract_number, extract_yes_no

OPTIONS = ["A. a red car", "B. a blue bus", "C. a green tram", "D. nothing"]


@pytest.mark.parametrize(
    ("response", "want"),
    [
        ("B", "B"),
        ("b", "B"),
        (" C", "C"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B)", "B"),
        ("B:", "B"),  # rule 1
        ("B. a blue bus", "B"),
        ("(C) a green tram", "C"),
        ("D) nothing at all", "D"),  # rule 2
        ("Answer: B", "B"),
        ("The answer is (C).", "C"),
        ("Best option: C", "C"),
        ("option d", "D"),  # rule 3
        ("A blue bus.", "B"),  # rule 4: the option's text; "A" here is an article
        ("I think it is C because of the tram", "C"),  # rule 5
        (["C"], "C"),
        (None, None),
        ("", None),
        ("ABCD", None),
        ("A or B", None),
        ("E", None),
        ("a person", None),
        ("The best option is", None),
    ],
)
def test_choice(response, want):
    assert extract_choice(response, OPTIONS) == want


def test_choice_letter_range_follows_the_options():
    assert extract_choice("E", n_options=5) == "E"
    assert extract_choice("E", ["x", "y"]) is None


@pytest.mark.parametrize(
    ("response", "want"),
    [
        ("3", 3),
        ("There are 3", 3),
        ("2 or 3", 2),
        ("03", 3),
        ("three times", 3),
        ("none", None),
        ("", None),
        (None, None),
        (["4"], 4),
        ("It happened twice", None),
    ],
)
def test_number(response, want):
    assert extract_number(response) == want


@pytest.mark.parametrize(
    ("response", "want"),
    [
        ("Yes", "Yes"),
        ("yes.", "Yes"),
        ("No.", "No"),
        ("no", "No"),
        ("Y", "Yes"),
        ("N", "No"),
        ("Not sure", None),
        ("None", None),
        ("I think yes", None),
        ("", None),
        (None, None),
    ],
)
def test_yes_no(response, want):
    assert extract_yes_no(response) == want
