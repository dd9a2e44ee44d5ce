"""Progress lines for logs: every tenth of the work and at least every 30 s, never silent for long."""

import time

from rich.console import Console

from stc_cli.progress import EvalProgress, LogLines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_each_tenth_with_rate_errors_and_eta():
    lines, clock = [], Clock()
    log = LogLines("stc eval", "samples", write=lines.append, clock=clock)
    log.start(20)
    for done in range(1, 21):
        clock.now += 3.0  # 20 samples per minute
        log.update(done, errors=done // 10)
    assert lines[0] == "stc eval: 20 samples to do"
    assert len(lines) == 11  # the start, then 2, 4, ..., 20 done
    assert lines[1] == "stc eval: 2/20 samples (10%), 20 samples/min, ETA 0m54s"
    assert lines[5] == "stc eval: 10/20 samples (50%), 20 samples/min, 1 errors, ETA 0m30s"
    assert lines[-1] == "stc eval: 20/20 samples (100%), 20 samples/min, 2 errors"


def test_a_jump_over_several_tenths_prints_one_line():
    lines = []
    log = LogLines("stc download", "MB", write=lines.append, clock=Clock())
    log.start(100)
    log.update(35)
    log.update(39)
    log.update(40)
    assert [line.split(":")[1].split(" (")[0] for line in lines[1:]] == [" 35/100 MB", " 40/100 MB"]


def test_long_silent_work_still_prints_every_interval():
    lines = []
    with LogLines("stc bench", "chunks", write=lines.append, every_s=0.05) as log:
        log.start(1000)
        log.update(1)  # under a tenth: no line of its own
        time.sleep(0.3)
    assert lines[0] == "stc bench: 1000 chunks to do"
    assert len(lines) >= 3 and all(line.startswith("stc bench: 1/1000 chunks (0%)") for line in lines[1:])


def test_eval_progress_writes_lines_when_stderr_is_not_a_terminal():
    lines = []
    log = LogLines("stc eval", "samples", write=lines.append, clock=Clock())
    with EvalProgress(Console(force_terminal=False), log=log) as progress:
        progress.start(2)
        progress({"error": None})
        progress({"error": "no such video"})
    assert lines == [
        "stc eval: 2 samples to do",
        "stc eval: 1/2 samples (50%)",
        "stc eval: 2/2 samples (100%), 1 errors",
    ]


def test_work_that_reports_nothing_is_polled():
    lines, fetched = [], [0.0]
    with LogLines("stc download ovo", "MB", write=lines.append, every_s=60, poll=lambda: fetched[0]) as log:
        log.start(100)
        fetched[0] = 55.0  # a transfer that has written 55 MB, read within a second
        time.sleep(1.5)
    assert lines[1].startswith("stc download ovo: 55/100 MB (55%)")
