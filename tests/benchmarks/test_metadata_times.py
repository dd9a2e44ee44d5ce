"""Metadata times that no video has (negative, NaN, infinite) are refused when the queries are loaded,
naming the file and the record: a NaN window passes every comparison and would reach samples.jsonl."""

import json
import math
import shutil

import pytest

from stc_cli.benchmarks import demo, mlvu, ovo
from stc_cli.benchmarks import streamingbench as sb
from stc_cli.benchmarks.base import MetadataError
from tests.benchmarks.test_mlvu import TASK_RECORDS
from tests.benchmarks.test_mlvu import _write as write_mlvu
from tests.benchmarks.test_ovo import FIXTURES
from tests.benchmarks.test_streamingbench import _clean_segments
from tests.benchmarks.test_streamingbench import _write_json as write_sb

BAD = [-1, -0.5, math.nan, math.inf, -math.inf]  # json.dumps writes NaN and Infinity, json.loads reads them


@pytest.mark.parametrize("value", BAD)
def test_demo_time(tmp_path, value):
    shutil.copytree(demo.PACKAGED, tmp_path / "demo")
    path = tmp_path / "demo" / "demo.json"
    records = json.loads(path.read_text())
    records[3]["time"] = value
    path.write_text(json.dumps(records))
    with pytest.raises(MetadataError) as caught:
        demo.load_queries(tmp_path)
    assert str(caught.value) == (
        f"{path}, record 3: time {value!r} is not a time in seconds (a finite number, 0 or more)"
    )


def _ovo(tmp_path, change):
    (tmp_path / "ovo").mkdir()
    items = json.loads((FIXTURES / "ovo_bench_new.json").read_text())
    change(items)
    (tmp_path / "ovo" / "ovo_bench_new.json").write_text(json.dumps(items))
    return tmp_path / "ovo" / "ovo_bench_new.json"


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(
    ("where", "record", "field"),
    [
        (lambda items: items[4], 4, "realtime"),  # OCR, a multiple-choice record
        (lambda items: items[11]["test_info"][1], 11, "test_info probe realtime"),  # SSR
        (lambda items: items[12], 12, "ask_time"),  # CRR
    ],
)
def test_ovo_times(tmp_path, value, where, record, field):
    path = _ovo(tmp_path, lambda items: where(items).update({field.split()[-1]: value}))
    with pytest.raises(MetadataError) as caught:
        ovo.load_queries(tmp_path)
    assert str(caught.value) == (
        f"{path}, record {record}: {field} {value!r} is not a time in seconds (a finite number, 0 or more)"
    )


def test_ovo_without_ask_time_still_loads(tmp_path):
    _ovo(tmp_path, lambda items: items[12].pop("ask_time"))
    assert len(ovo.load_queries(tmp_path)) == 21


@pytest.mark.parametrize("raw", ["-0:00:05", "00:-1:30", "0:00:-1"])
def test_streamingbench_negative_time_stamp(tmp_path, raw):
    segments = _clean_segments()[:1]
    segments[0]["questions"][1]["time_stamp"] = raw
    write_sb(tmp_path, segments)
    with pytest.raises(MetadataError) as caught:
        sb.load_queries(tmp_path)
    path = tmp_path / "streamingbench" / "questions_real.json"
    assert str(caught.value) == (
        f"{path}, record streamingbench/sample_99/2: time_stamp {raw!r} has a negative part; expected H:MM:SS"
    )


@pytest.mark.parametrize("value", BAD)
def test_mlvu_duration(tmp_path, value):
    records = {**TASK_RECORDS, "2_needle": [{**TASK_RECORDS["2_needle"][0], "duration": value}]}
    write_mlvu(tmp_path, records)
    with pytest.raises(MetadataError) as caught:  # before 3_ego's odd answer warns
        mlvu.load_queries(tmp_path)
    path = tmp_path / "mlvu" / "json" / "2_needle.json"
    assert str(caught.value) == (
        f"{path}, record 0: duration {value!r} is not a time in seconds (a finite number, 0 or more)"
    )
