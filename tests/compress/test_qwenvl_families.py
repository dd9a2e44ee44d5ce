"""What STC-Cacher does alike on the Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision towers (``cacher_family.py``):
detaching, a grid change, bounded state, half precision (on a GPU too). What differs per family is in its own
file."""

import pytest
import torch

from stc_cli.accel import OpCensus
from stc_cli.compress import STCCacher
from stc_cli.compress.cacher_family import ChunkMemo
from tests.compress.qwen2vl_models import tiny_qwen2vl, tiny_qwen3vl, tiny_qwen25vl, video_chunks
from tests.compress.spec_reference import ReferenceQwen2VLCacher, ReferenceQwen25VLCacher

# tower, its step-by-step spec, and the float32 tolerance against it (hidden states reach |15| in the
# Qwen2.5-VL and Qwen3-VL towers: a few ulps)
TOWERS = {
    "qwen2vl": (tiny_qwen2vl, ReferenceQwen2VLCacher, 1e-5),
    "qwen25vl": (tiny_qwen25vl, ReferenceQwen25VLCacher, 2e-5),
    "qwen3vl": (tiny_qwen3vl, ReferenceQwen2VLCacher, 2e-5),
}


def run(tower, chunk):
    pixels, grid = chunk
    with torch.no_grad():
        return tower(pixels, grid_thw=grid, output_hidden_states=True)


def outputs(out) -> list[torch.Tensor]:
    """Every tensor the tower returns: its outputs, hidden states and (Qwen3-VL) deepstack features."""
    found = []
    for value in out.values():
        found += list(value) if isinstance(value, tuple | list) else [value]
    return found


@pytest.mark.parametrize("name", TOWERS)
def test_detach_restores_the_stock_model(name):
    make = TOWERS[name][0]
    stock, tower = make(), make()
    chunks = video_chunks(1, 3)
    run(tower, chunks[0])  # transformers installs hooks of its own on first use

    def hook_counts():
        return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tower.modules()]

    stock_hooks = hook_counts()
    cacher = STCCacher(interval=2).attach(tower)
    for chunk in chunks:
        run(tower, chunk)
    assert cacher.state_nbytes() > 0 and hook_counts() != stock_hooks
    cacher.detach()
    assert cacher.state_nbytes() == 0
    assert all("forward" not in block.__dict__ for block in tower.blocks)
    assert hook_counts() == stock_hooks and not hasattr(tower, "_stc_cacher")
    for chunk in chunks:  # every chunk is stock again, including odd ones: every output, bit for bit
        got, want = outputs(run(tower, chunk)), outputs(run(stock, chunk))
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    STCCacher().attach(tower)  # and it can take a cacher again


@pytest.mark.parametrize("name", TOWERS)
def test_reference_chunks_are_bit_identical_to_stock(name):
    make = TOWERS[name][0]
    stock, tower = make(), make()
    cacher = STCCacher(update_ratio=0.25, interval=2).attach(tower)
    chunks = video_chunks(2, 5)
    for c, chunk in enumerate(chunks):
        got, want = run(tower, chunk), run(stock, chunk)
        if c % 2 == 0:  # every output (Qwen3-VL: the deepstack features too), bit for bit
            pairs = list(zip(outputs(got), outputs(want), strict=True))
            assert len(pairs) > 3 and all(torch.equal(a, b) for a, b in pairs)
        else:
            assert not torch.equal(got.last_hidden_state, want.last_hidden_state)
            if name == "qwen3vl":  # the deepstack taps read the selective blocks' outputs
                assert not torch.equal(got.deepstack_features[0], want.deepstack_features[0])
    cacher.reset()  # a new video: the next chunk is a reference chunk again, whatever the counter said
    pairs = zip(outputs(run(tower, chunks[1])), outputs(run(stock, chunks[1])), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert cacher.selected == [None] * len(tower.blocks)


def conditional_model(name: str):
    """The tower inside its ``...ForConditionalGeneration``, with a tiny text model (random weights)."""
    import transformers

    config_class, model_class = {
        "qwen2vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
        "qwen25vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
        "qwen3vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
    }[name]
    text = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2 if name == "qwen3vl" else 1,  # Qwen3-VL: a layer per deepstack feature
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    )
    if name == "qwen3vl":
        text["head_dim"] = 16
    vision = TOWERS[name][0]().config.to_dict()
    config = getattr(transformers, config_class)(vision_config=vision, text_config=text)
    torch.manual_seed(0)
    return getattr(transformers, model_class)(config).eval()


@pytest.mark.parametrize("name", TOWERS)
def test_attaches_to_the_tower_inside_the_for_conditional_generation_model(name):
    """Given the whole model it says which module to pass; on ``model.model.visual`` the model's own
    ``get_video_features`` runs through it (at ratio 1.0: the stock features, deepstack ones included)."""
    model, atol = conditional_model(name), TOWERS[name][2]
    with pytest.raises(ValueError, match=r"pass model\.model\.visual"):
        STCCacher().attach(model)
    cacher = STCCacher(update_ratio=1.0).attach(model.model.visual)
    stock = [run(model.model.visual, chunk) for chunk in video_chunks(1, 2)]
    cacher.reset()
    with torch.no_grad():
        for chunk, want in zip(video_chunks(1, 2), stock, strict=True):
            got = model.model.get_video_features(*chunk)
            torch.testing.assert_close(torch.cat(got.pooler_output), want.pooler_output, rtol=0, atol=atol)
            deepstack = zip(
                getattr(got, "deepstack_features", None) or [],
                getattr(want, "deepstack_features", None) or [],
                strict=True,
            )
            compared = 0
            for feature, stock_feature in deepstack:
                torch.testing.assert_close(torch.cat(feature), stock_feature, rtol=0, atol=atol)
                compared += 1
            assert compared == (2 if name == "qwen3vl" else 0)  # Qwen3-VL's taps after blocks 0 and 1
    assert cacher.selected[0].shape == (1, 24)  # the second chunk went through the selective path


NEW_GRIDS = {
    "transposed": (6, 4),  # the same 24 tokens, at other places (Qwen2.5-VL: in other windows)
    "smaller": (4, 4),  # 16 tokens (Qwen2.5-VL: one window)
    "mixed": (4, 4),  # one patch on the reference grid, one on 4 x 4: patches of unequal length
}


@pytest.mark.parametrize("grid_change", NEW_GRIDS)
@pytest.mark.parametrize("name", TOWERS)
def test_grid_change_runs_a_reference_pass(name, grid_change):
    make, reference, atol = TOWERS[name]
    new_grid = NEW_GRIDS[grid_change]
    stock, tower = make(), make()
    spec = reference(make(), interval=3)
    cacher = STCCacher(interval=3).attach(tower)
    changed = video_chunks(1, 1, grid=new_grid, seed=1)[0]
    if grid_change == "mixed":
        (pixels, grid), (more, more_grid) = video_chunks(1, 1, seed=2)[0], changed
        changed = torch.cat([pixels, more]), torch.cat([grid, more_grid])
    stream = [video_chunks(1, 1)[0], changed, video_chunks(1, 1, grid=new_grid, seed=3)[0]]
    selected = []
    for chunk in stream:  # a reference chunk, then two selective ones by the counter
        out = run(tower, chunk)
        for layer, want in enumerate(spec.run_chunk(*chunk)[0]):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=atol)
        selected.append(cacher.selected[0])
        if chunk is changed:  # no usable reference: a stock pass, whose last patch becomes the reference
            assert torch.equal(out.pooler_output, run(stock, chunk).pooler_output)
    tokens = new_grid[0] * new_grid[1]
    assert selected[:2] == [None, None] and selected[2].shape == (1, tokens // 4)


@pytest.mark.parametrize("name", ["qwen2vl", "qwen25vl"])
def test_state_is_bounded(name):
    tower = TOWERS[name][0]()
    cacher = STCCacher(interval=2).attach(tower)
    chunks = video_chunks(1, 30)
    run(tower, chunks[0])
    run(tower, chunks[1])
    after_two = cacher.state_nbytes()
    for chunk in chunks[2:]:
        run(tower, chunk)
    # Per block: the qkv output [24, 96] (K and V are views of it), A and M [24, 32]; once per chunk the
    # rotary cos table [24, 16] that all blocks' references share. float32.
    assert after_two == cacher.state_nbytes() == (len(tower.blocks) * 24 * (96 + 32 + 32) + 24 * 16) * 4


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", TOWERS)
def test_half_precision_matches_stock_at_full_ratio_and_runs_selective(name, dtype, device):
    make = TOWERS[name][0]
    stock, tower = make(dtype=dtype).to(device), make(dtype=dtype).to(device)
    chunks = [(pixels.to(device, dtype), grid.to(device)) for pixels, grid in video_chunks(2, 3)]
    full = STCCacher(update_ratio=1.0, interval=2).attach(tower)
    for chunk in chunks:
        got, want = run(tower, chunk), run(stock, chunk)
        assert got.pooler_output.dtype == dtype
        deepstack = getattr(got, "deepstack_features", None) or ()  # Qwen3-VL's
        assert len(deepstack) == (2 if name == "qwen3vl" else 0)
        for a, b in zip(
            [got.pooler_output, *deepstack],
            [want.pooler_output, *(getattr(want, "deepstack_features", None) or ())],
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=5e-2)  # outputs reach |3|: bf16 steps of 1/64
    full.detach()
    cacher = STCCacher(update_ratio=0.25, interval=2).attach(tower)
    for index, chunk in enumerate(chunks):
        assert torch.isfinite(run(tower, chunk).pooler_output).all()
        blocks = len(cacher.selected)
        if index % 2:  # a selective chunk: 6 of each temporal patch's 24 tokens, in every block
            assert [selected.shape for selected in cacher.selected] == [(2, 6)] * blocks
        else:  # a reference chunk selects none
            assert cacher.selected == [None] * blocks


# What a chunk with the cacher reads on the host beyond the stock tower's own reads (transformers reads
# the grid and builds the windows), once per chunk whatever the depth: Qwen2.5-VL the temporal patches'
# starts (every chunk), each selective chunk its reference's positions.
EXTRA_SYNCS = {"qwen2vl": (0, 1), "qwen25vl": (1, 2), "qwen3vl": (0, 1)}


@pytest.mark.parametrize("name", TOWERS)
def test_a_chunk_waits_for_the_device_once_not_once_per_block(name):
    make = TOWERS[name][0]
    stock, tower = make(), make()
    assert len(tower.blocks) >= 2
    STCCacher(interval=2).attach(tower)
    extra = []
    for chunk in video_chunks(2, 4):
        with OpCensus() as stock_census:
            run(stock, chunk)
        with OpCensus() as census:
            run(tower, chunk)
        extra.append(sum(census.host_syncs.values()) - sum(stock_census.host_syncs.values()))
    assert extra == list(EXTRA_SYNCS[name]) * 2  # reference, selective, reference, selective


def test_a_chunk_memo_reads_once_per_set_of_tensors_and_keeps_the_last_few():
    memo, reads = ChunkMemo(size=2), []
    a, b, c = torch.tensor([0, 4]), torch.tensor([0, 4]), torch.tensor([0, 8])

    def read(t):
        return lambda: reads.append(t) or t.tolist()

    assert memo.get((a,), read(a)) == [0, 4] and memo.get((a,), read(a)) == [0, 4]
    assert memo.get((b,), read(b)) == [0, 4]  # equal values, another tensor: read again
    assert memo.get((c,), read(c)) == [0, 8]  # a, the oldest, leaves
    assert memo.get((b,), read(b)) == [0, 4] and memo.get((a,), read(a)) == [0, 4]
    assert [id(t) for t in reads] == [id(a), id(b), id(c), id(a)]
