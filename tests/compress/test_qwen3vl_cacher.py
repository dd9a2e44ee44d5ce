"""STCCacher on the Qwen3-VL vision tower: Qwen2-VL-like blocks, deepstack features from middle blocks."""

import pytest
import torch

from stc_cli.compress import STCCacher
from tests.compress.qwen2vl_models import as_rows, tiny_qwen3vl, video_chunks
from tests.compress.spec_reference import ReferenceQwen2VLCacher, qwen3vl_deepstack

GRID_T = "t"  # several temporal patches as grid_thw [[S, gh, gw]]
GRID_ROWS = "rows"  # the same as S rows [1, gh, gw]
ATOL = 2e-5  # hidden states reach |16| in this tower: a few float32 ulps


def run(tower, chunk):
    pixels, grid = chunk
    with torch.no_grad():
        return tower(pixels, grid_thw=grid, output_hidden_states=True)


@pytest.mark.parametrize(("patches", "layout"), [(1, GRID_T), (2, GRID_T), (2, GRID_ROWS)])
@pytest.mark.parametrize("interval", [2, 3])
def test_selective_path_matches_step_by_step_spec(patches, layout, interval):
    stock, tower = tiny_qwen3vl(), tiny_qwen3vl()
    spec = ReferenceQwen2VLCacher(stock, update_ratio=0.25, interval=interval)  # the blocks are Qwen2-VL's
    cacher = STCCacher(update_ratio=0.25, interval=interval).attach(tower)
    n_selective = 0
    for c, (pixels, grid) in enumerate(video_chunks(patches, 6)):
        grid = as_rows(grid) if layout == GRID_ROWS else grid
        expected, expected_sel = spec.run_chunk(pixels, grid)
        out = run(tower, (pixels, grid))
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=ATOL)
            got = cacher.selected[layer]
            if c % interval == 0:
                assert got is None and expected_sel[layer] is None
            else:
                n_selective += 1
                assert got.shape == (patches, 6)  # int(24 tokens * 0.25) per temporal patch
                assert [set(row.tolist()) for row in got] == expected_sel[layer]
        # Deepstack features: the spec's outputs of blocks 0 and 1 through the tower's deepstack mergers.
        for got, want in zip(out.deepstack_features, qwen3vl_deepstack(stock, expected), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
        with torch.no_grad():
            torch.testing.assert_close(out.pooler_output, stock.merger(expected[-1]), rtol=0, atol=ATOL)
    assert n_selective == 3 * (6 - len(range(0, 6, interval)))  # 3 blocks x selective chunks


def test_deepstack_features_are_the_cached_layers_outputs():
    """In a selective chunk each deepstack feature is its merger over exactly what the cached block
    returned (the hidden state the next block got), not over a stock recomputation."""
    stock, tower = tiny_qwen3vl(), tiny_qwen3vl()
    cacher = STCCacher(update_ratio=0.25, interval=2).attach(tower)
    chunks = video_chunks(2, 2)
    run(tower, chunks[0])
    out, want = run(tower, chunks[1]), run(stock, chunks[1])
    assert all(selected is not None for selected in cacher.selected)
    with torch.no_grad():
        for index, merger, feature, stock_feature in zip(
            tower.deepstack_visual_indexes,
            tower.deepstack_merger_list,
            out.deepstack_features,
            want.deepstack_features,
            strict=True,
        ):
            assert torch.equal(feature, merger(out.hidden_states[index + 1]))
            assert (feature - stock_feature).abs().max() > 100 * ATOL  # the block's approximation shows


def test_similarity_threshold_matches_spec():
    stock, tower = tiny_qwen3vl(), tiny_qwen3vl()
    spec = ReferenceQwen2VLCacher(stock, interval=2, similarity_threshold=0.9)
    cacher = STCCacher(interval=2, similarity_threshold=0.9).attach(tower)
    counts = set()
    for c, chunk in enumerate(video_chunks(2, 4, seed=1)):
        expected, expected_sel = spec.run_chunk(*chunk)
        out = run(tower, chunk)
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=ATOL)
            if c % 2:
                assert [set(row.tolist()) for row in cacher.selected[layer]] == expected_sel[layer]
                counts.update(len(s) for s in expected_sel[layer])
        for got, want in zip(out.deepstack_features, qwen3vl_deepstack(stock, expected), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    assert len(counts) > 1  # the token count followed the motion


def test_full_update_ratio_equals_stock():
    stock, tower = tiny_qwen3vl(), tiny_qwen3vl()
    cacher = STCCacher(update_ratio=1.0, interval=2).attach(tower)
    for c, chunk in enumerate(video_chunks(2, 4)):
        want, got = run(stock, chunk), run(tower, chunk)
        for name in ("last_hidden_state", "pooler_output"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=ATOL)
        for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
        assert len(got.deepstack_features) == 2
        for a, b in zip(got.deepstack_features, want.deepstack_features, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
        assert (cacher.selected[0] is None) == (c % 2 == 0)
    assert cacher.selected[0].shape == (2, 24)  # every token went the selective way


def test_an_mlp_without_its_parts_fails_clearly():
    tower = tiny_qwen3vl()
    del tower.blocks[1].mlp.linear_fc2
    message = r"encoder layer 1 .* not a Qwen3-VL vision block: missing \['mlp.linear_fc2'\]"
    with pytest.raises(ValueError, match=message):
        STCCacher().attach(tower)
    assert not hasattr(tower, "_stc_cacher")
