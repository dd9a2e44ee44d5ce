"""`stc bench`'s timer: the operators each step launches and the host syncs it makes, counted on the
warm-up chunks of the first repeat."""

import dataclasses

import torch

from stc_cli.bench import run_bench
from stc_cli.bench.timer import Timer
from tests.bench import TINY


def steps():
    x = torch.ones(3)
    return {
        "add": lambda i: x + 1,  # one operator
        "read": lambda i: x.sum().item(),  # a sum, then the host reads it: two operators, one sync
        "grows": lambda i: [x + 1 for _ in range(2 * i + 1)],  # 1, 3, 5, 7 operators at chunks 0..3
    }


def test_each_step_is_counted_per_warm_up_chunk_of_the_first_repeat():
    timer = Timer(torch.device("cpu"), warmup=2, chunks=4, repeats=2, count_ops=True)
    ms = timer.compare(steps)
    assert set(ms) == {"add", "read", "grows"}
    assert timer.op_counts() == {
        "counted_chunks": 2,
        "per_chunk": {"add": 1.0, "read": 2.0, "grows": 2.0},  # grows: (1 + 3) / 2 at chunks 0 and 1
        "host_syncs": {"add": 0, "read": 2, "grows": 0},
    }


def test_stages_that_share_step_names_are_counted_apart_and_a_rechunked_timer_shares_the_counts():
    timer = Timer(torch.device("cpu"), warmup=2, chunks=4, repeats=1, count_ops=True)
    timer.compare(steps, stage="one_")
    timer.with_chunks(3).compare(steps, stage="two_")  # one timed chunk after the warm-up
    assert timer.op_counts()["per_chunk"] == {
        f"{stage}_{step}": count
        for stage in ("one", "two")
        for step, count in {"add": 1.0, "read": 2.0, "grows": 2.0}.items()
    }


def test_nothing_is_counted_without_count_ops_or_without_warm_up_chunks():
    for timer in (
        Timer(torch.device("cpu"), warmup=2, chunks=4, repeats=1),
        Timer(torch.device("cpu"), warmup=0, chunks=4, repeats=1, count_ops=True),
    ):
        timer.compare(steps)
        assert timer.op_counts() is None


def test_a_bench_report_counts_every_timed_step_and_no_step_syncs():
    """Two warm-up chunks: STC-Cacher's reference chunk and a selective one."""
    launches = run_bench(dataclasses.replace(TINY, warmup=2, decode_tokens=2))["launches"]
    labels = {"vit_full", "vit_stc", "pruner", "prefill_full", "prefill_pruned", "rekv_full", "rekv_pruned"}
    labels |= {"decode_full", "decode_pruned", "rekv_decode_full", "rekv_decode_pruned"}
    assert set(launches["per_chunk"]) == labels
    assert launches["host_syncs"] == dict.fromkeys(labels, 0)
    per_chunk = launches["per_chunk"]
    # a selective chunk launches more than a stock one (every other chunk here; reference chunks as many)
    assert per_chunk["vit_stc"] > per_chunk["vit_full"]
    # fewer tokens, the same kernels
    for row in ("prefill", "rekv", "decode", "rekv_decode"):
        assert per_chunk[f"{row}_pruned"] == per_chunk[f"{row}_full"] > 0, row
