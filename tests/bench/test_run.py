"""`stc bench`'s option checks: one line naming the flag, before anything is built."""

import dataclasses

import pytest

from stc_cli.bench import run_bench
from tests.bench import TINY


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames_per_chunk": 0}, "--frames-per-chunk must be >= 1, got 0"),
        (
            {"vision": "qwen2vl-tiny", "frames_per_chunk": 3},
            "--frames-per-chunk must be even for --vision qwen2vl-tiny (a chunk holds whole temporal patches "
            "of 2 frames), got 3",
        ),
        ({"n_local": 0}, "--n-local must be >= 1, got 0"),
        ({"decode_tokens": -1}, "--decode-tokens must be >= 0, got -1"),
    ],
)
def test_bad_new_options_raise_one_line_naming_the_flag(change, message):
    with pytest.raises(ValueError) as error:
        run_bench(dataclasses.replace(TINY, **change))
    assert str(error.value) == message
