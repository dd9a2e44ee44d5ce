"""Questions: --ask text, --questions files, stdin lines, and the query each becomes."""

import io
import json
import math
import threading

import pytest

from stc_cli import protocols
from stc_cli.live.questions import (
    ASK_FORM,
    Question,
    StdinQuestions,
    load_file,
    parse_ask,
    parse_line,
    prompt,
    to_query,
)


def test_ask_with_and_without_options():
    assert parse_ask("12.5: What is the man holding?") == Question(
        "What is the man holding?", (), 12.5, "--ask"
    )
    assert parse_ask(" 30 :Which direction? | A. left | B) right ") == Question(
        "Which direction?", ("left", "right"), 30.0, "--ask"
    )
    assert parse_ask("0: Which? | left | right").options == ("left", "right")
    assert parse_ask(".5: Time: now?").t == 0.5 and parse_ask(".5: Time: now?").text == "Time: now?"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("What is he holding?", "expected seconds, a colon and the question"),
        ("-3: negative?", "expected seconds, a colon and the question"),
        ("12.5:", "the question is empty"),
        ("12: Which? | B. left | A. right", "options must be lettered A, B in order, got BA"),
        ("12: Which? | A. left | | C. up", "an option is empty"),
        ("12: Which? | left | ", "an option is empty"),
        ("12: " + " | x" * 9, "the question is empty"),
        ("12: Which?" + " | x" * 9, "at most 8 options, got 9"),
    ],
)
def test_a_malformed_ask_gets_one_line_showing_the_form(text, why):
    with pytest.raises(ValueError) as caught:
        parse_ask(text)
    message = str(caught.value)
    assert message.startswith(f"--ask {text!r}: {why}") and message.endswith(ASK_FORM) and "\n" not in message


def test_stdin_lines():
    assert parse_line("  \n") is None
    assert parse_line("What now? | A. yes | B. no\n") == Question("What now?", ("yes", "no"), None, "stdin")
    with pytest.raises(ValueError, match="lettered"):
        parse_line("Which? | B. x")


def test_questions_file(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"t": 3, "question": " Where? "}, {"t": 1.5, "question": "Which?", "options": ["a", "b"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n\n" + json.dumps(rows[1]) + "\n")
    assert load_file(path) == [
        Question("Where?", (), 3.0, f"{path}:1"),
        Question("Which?", ("a", "b"), 1.5, f"{path}:3"),
    ]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"question": "q"}', '"t" must be the stream time in seconds (0 or more), got None'),
        ('{"t": -1, "question": "q"}', '"t" must be the stream time'),
        ('{"t": true, "question": "q"}', '"t" must be the stream time'),
        ('{"t": 1, "question": ""}', '"question" must be a non-empty string'),
        ('{"t": 1, "question": "q", "options": "ab"}', '"options" must be a list of non-empty strings'),
    ],
)
def test_a_bad_questions_file_names_the_file_and_line(tmp_path, line, why):
    path = tmp_path / "q.jsonl"
    path.write_text('{"t": 0, "question": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError) as caught:
        load_file(path)
    assert str(caught.value).startswith(f"--questions {path}, line 2: {why}")


def test_a_missing_questions_file(tmp_path):
    with pytest.raises(ValueError, match=r"--questions .*missing\.jsonl: cannot be read"):
        load_file(tmp_path / "missing.jsonl")


def test_the_query_of_a_question_under_each_streaming_protocol():
    question = Question("Which way?", ("left", "right"), 4.0)
    assert (
        prompt(question)
        == "Question: Which way?\nOptions:\nA. left\nB. right\nAnswer with the option's letter."
    )
    assert prompt(Question("Why?")) == "Why?"
    query = to_query(question, 3, "cam.mp4", protocols.resolve("rekv", "streamingbench"))
    assert (query.id, query.video, query.window, query.options, query.question) == (
        "live/3",
        "cam.mp4",
        (0.0, math.inf),
        ("left", "right"),
        "Which way?",
    )
    assert query.prompt == prompt(question)
    for name in ("rekv-chat",):
        assert to_query(question, 1, "x", protocols.resolve("rekv", "streamingbench", name)).prompt == prompt(
            question
        )


def test_stdin_questions_are_stamped_when_read_and_bad_lines_reported():
    asked, bad, done = [], [], threading.Event()
    clock = iter([1.0, 2.0, 3.0])
    reader = StdinQuestions(
        io.StringIO("first?\n\nWhich? | B. x\nsecond? | A. a | B. b\n"),
        lambda q, at: asked.append((q.text, q.options, at)),
        bad.append,
        lambda: next(clock),
    ).start()
    reader.thread.join(5)
    done.set()
    assert asked == [("first?", (), 1.0), ("second?", ("a", "b"), 2.0)]
    assert len(bad) == 1 and bad[0].startswith("stdin 'Which? | B. x': options must be lettered A in order")
