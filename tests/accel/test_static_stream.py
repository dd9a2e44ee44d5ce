import pytest
import torch

from stc_cli.accel import GraphReplay, OpCensus, StaticStream
from stc_cli.models.presets import random_language_model


def dynamic_stream(llm):
    from transformers import DynamicCache

    cache = DynamicCache(config=llm.config)
    return lambda embeds: llm(inputs_embeds=embeds, cache=cache, use_cache=True).last_hidden_state


def chunks(width, sizes, device="cpu", dtype=torch.float32):
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(1, size, width, generator=generator).to(device, dtype) for size in sizes]


SIZES = [16, 6, 6, 6, 1, 1, 1]  # an init prompt, three frames, three generated tokens


@torch.inference_mode()
def test_a_static_stream_gives_the_hidden_states_of_the_growing_cache():
    llm = random_language_model("tiny", seed=2)
    static, dynamic = StaticStream(llm, capacity=40, replay=GraphReplay()), dynamic_stream(llm)
    for step, x in enumerate(chunks(llm.config.hidden_size, SIZES)):
        torch.testing.assert_close(static(x), dynamic(x), rtol=1e-5, atol=1e-5, msg=f"step {step}")
    assert static.length == sum(SIZES)


@torch.inference_mode()
def test_no_step_makes_the_host_wait_and_each_launches_the_same_operators():
    """What a CUDA graph records: no host sync, and the same operators for every step of one length."""
    llm = random_language_model("tiny", seed=2)
    stream, counts = StaticStream(llm, capacity=40), []
    for x in chunks(llm.config.hidden_size, SIZES):
        with OpCensus() as census:
            stream(x)
        assert census.host_syncs == {}
        counts.append(census.launches)
    assert counts[1] == counts[2] == counts[3] and counts[4] == counts[5] == counts[6]


@torch.inference_mode()
def test_a_stream_longer_than_its_capacity_is_refused():
    llm = random_language_model("tiny", seed=2)
    stream = StaticStream(llm, capacity=20)
    stream(torch.zeros(1, 16, llm.config.hidden_size))
    with pytest.raises(ValueError, match="^22 tokens do not fit a static KV cache of 20$"):
        stream(torch.zeros(1, 6, llm.config.hidden_size))


@pytest.mark.gpu
@torch.inference_mode()
def test_on_cuda_replayed_steps_equal_eager_steps():
    llm = random_language_model("tiny", seed=2, device="cuda", dtype=torch.float16)
    replay = GraphReplay()
    replayed, eager = StaticStream(llm, 40, replay), StaticStream(llm, 40)
    dynamic = dynamic_stream(llm)
    for x in chunks(llm.config.hidden_size, SIZES, "cuda", torch.float16):
        got, want = replayed(x), eager(x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(got, dynamic(x), rtol=2e-2, atol=2e-2)
    assert replay.graphs == 2 and replay.replays == 2 + 2  # 6 and 1 tokens: eager, then recorded
