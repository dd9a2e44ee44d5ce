"""ToMe inside a ViT (``stc_cli/compress/tome.py``): the merge against hand-worked cases and the released
``tome/merge.py``, proportional attention against an eager softmax, the tower end to end (stock at r=0,
unmerged at the output), the schedule, detach and refusals."""

import json
import math
from pathlib import Path

import pytest
import torch

from stc_cli.compress.tome import ToMe, bipartite_merge, tome_layer
from tests.compress.models import moving_frames, tiny_clip, tiny_siglip

# Written by running facebookresearch/ToMe af95e4b tome/merge.py (bipartite_soft_matching, merge_source,
# merge_wavg; CPU float32) on the seeded inputs below, two merge rounds per case.
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "tome_reference.json").read_text())


def run(model, frames, **kwargs):
    with torch.no_grad():
        return model(pixel_values=frames, output_hidden_states=True, **kwargs)


def groups(index: torch.Tensor, merged: int) -> list[list[list[int]]]:
    """The source matrix as lists: per frame, per merged token, the original positions it holds."""
    return [[(row == j).nonzero().flatten().tolist() for j in range(merged)] for row in index]


def eager_attention(layer, x, size):
    """x + attention branch with softmax(q k^T * scale + log size) v, and the keys averaged over heads."""
    attn, (frames, tokens, channels) = layer.self_attn, x.shape
    h = layer.layer_norm1(x)
    q, k, v = (
        p(h).view(frames, tokens, -1, attn.head_dim).transpose(1, 2)
        for p in (attn.q_proj, attn.k_proj, attn.v_proj)
    )
    logits = q @ k.transpose(-1, -2) * attn.scale + size.log()[:, None, None, :, 0]
    out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(frames, tokens, channels)
    return x + attn.out_proj(out), k.mean(dim=1)


# -- the merge ---------------------------------------------------------------------------------------


def test_hand_worked_merge_sizes_weighted_means_and_upstream_order():
    # A = positions 0, 2, 4; B = 1, 3, 5. Best cosines: A0 -> B(1) 1.0, A1 -> B(3) 0.8, A2 -> B(5) 12/13.
    metric = torch.tensor([[1, 0], [1, 0], [3, 4], [0, 1], [-12, -5], [-1, 0]], dtype=torch.float32)[None]
    x = torch.tensor([0.0, 10, 20, 30, 40, 50])[None, :, None]
    size = torch.tensor([2.0, 1, 1, 1, 3, 1])[None, :, None]

    merged, new_size, dest = bipartite_merge(x, metric, size, r=2)  # 0 -> 1 and 4 -> 5; 2 stays
    assert merged[0, :, 0].tolist() == [20, pytest.approx(10 / 3), 30, 42.5]  # (2*0+10)/3, (3*40+50)/4
    assert new_size[0, :, 0].tolist() == [1, 3, 1, 4]
    assert dest.tolist() == [[1, 1, 0, 2, 3, 3]]  # unmerged A, then B (with what merged into it)

    merged, new_size, dest = bipartite_merge(x, metric, size, r=1)  # only 0 -> 1
    # Unmerged A tokens come by descending best score (4: 12/13, then 2: 0.8), not by position, as upstream.
    assert merged[0, :, 0].tolist() == [40, 20, pytest.approx(10 / 3), 30, 50]
    assert new_size[0, :, 0].tolist() == [3, 1, 3, 1, 1]
    assert dest.tolist() == [[2, 2, 1, 3, 0, 4]]


def test_hand_worked_merge_protects_the_class_token_and_caps_r():
    # CLS (0) matches B(1) perfectly but never merges; 2 (cos 1) and 4 (cos 0.8) both merge into 1.
    metric = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1], [0.8, 0.6]])[None]
    x = torch.tensor([100.0, 1, 2, 3, 6])[None, :, None]
    for r in (2, 5):  # 5 is capped at (5 - 1) // 2 = 2
        merged, size, dest = bipartite_merge(x, metric, None, r, class_token=True)
        assert merged[0, :, 0].tolist() == [100, 3, 3]  # CLS, (1 + 2 + 6) / 3, 3
        assert size[0, :, 0].tolist() == [1, 3, 1]
        assert dest.tolist() == [[0, 1, 1, 2, 1]]
    merged, _, dest = bipartite_merge(x, metric, None, 1, class_token=True)  # only 2 -> 1; then CLS, 4
    assert merged[0, :, 0].tolist() == [100, 6, 1.5, 3] and dest.tolist() == [[0, 2, 2, 3, 1]]
    unchanged = bipartite_merge(x, metric, None, 0, class_token=True)
    assert unchanged[0] is x and unchanged[1] is None and unchanged[2] is None


@pytest.mark.parametrize(
    "case", REFERENCE["cases"], ids=lambda c: f"seed{c['seed']}-cls{int(c['class_token'])}"
)
def test_upstream_merge_wavg_and_merge_source_are_reproduced(case):
    frames, channels = case["frames"], case["channels"]
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(frames, case["tokens"], channels, generator=g)
    assert float(x.double().sum()) == pytest.approx(case["input_sum"], abs=1e-9)  # the same inputs
    size, index = None, torch.arange(case["tokens"]).expand(frames, -1)
    for expected in case["rounds"]:
        metric = torch.randn(frames, x.shape[1], channels, generator=g)
        assert float(metric.double().sum()) == pytest.approx(expected["metric_sum"], abs=1e-9)
        x, size, dest = bipartite_merge(x, metric, size, expected["r"], case["class_token"])
        index = dest.gather(1, index)
        torch.testing.assert_close(x, torch.tensor(expected["x"]), rtol=0, atol=1e-6)
        assert size[..., 0].tolist() == expected["size"]
        assert groups(index, x.shape[1]) == expected["groups"]


# -- one layer and the tower ---------------------------------------------------------------------------


def test_proportional_attention_matches_an_eager_softmax_with_log_size():
    layer = tiny_siglip().encoder.layers[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 32, generator=g)
    size = torch.randint(1, 6, (2, 9, 1), generator=g).float()
    with torch.no_grad():
        out, new_size, dest = tome_layer(layer, x, size, r=0)
        h, _ = eager_attention(layer, x, size)
        expected = h + layer.mlp(layer.layer_norm2(h))
        unweighted = tome_layer(layer, x, None, r=0)[0]
    assert new_size is size and dest is None
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert (out - unweighted).abs().max() > 1e-3  # the sizes do change the output


@pytest.mark.parametrize("build", [tiny_siglip, tiny_clip])
def test_r_zero_is_exactly_the_stock_model(build):
    model, frames = build(), moving_frames(3)
    stock = run(model, frames)
    for r in (0, [0, 0, 0]):
        tome = ToMe(r).attach(model)
        out = run(model, frames)
        assert tome.tokens == [stock.last_hidden_state.shape[1]] * 3 and tome.index_map is None
        tome.detach()
        assert torch.equal(out.last_hidden_state, stock.last_hidden_state)
        assert torch.equal(out.pooler_output, stock.pooler_output)
        assert len(out.hidden_states) == len(stock.hidden_states) == 4
        assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, stock.hidden_states, strict=True))


def test_siglip_merges_per_schedule_and_unmerges_to_the_full_grid():
    model, frames = tiny_siglip(), moving_frames(3)
    rs = ToMe.schedule(tokens=16, layers=3, keep=6)
    tome = ToMe(rs).attach(model)
    out = run(model, frames)
    assert tome.tokens == [12, 9, 6]
    assert [h.shape[1] for h in out.hidden_states] == [16, 12, 9, 16]  # intermediate layers stay merged
    assert out.last_hidden_state.shape == (3, 16, 32)

    # Every original position holds exactly its merged token; 6 distinct tokens per frame.
    final, index = out.hidden_states[-1], tome.index_map
    for f in range(3):
        assert sorted(set(index[f].tolist())) == list(range(6))
        for j in range(6):
            rows = final[f, index[f] == j]
            assert torch.equal(rows, rows[:1].expand_as(rows))
        assert len({tuple(row.tolist()) for row in final[f]}) == 6

    # The same tower computed eagerly: softmax with log size, merge, MLP, copy back after the last layer.
    with torch.no_grad():
        x, size, idx = model.embeddings(frames), torch.ones(3, 16, 1), torch.arange(16).expand(3, -1)
        for layer, r, recorded in zip(model.encoder.layers, rs, out.hidden_states[1:], strict=True):
            h, metric = eager_attention(layer, x, size)
            x, size, dest = bipartite_merge(h, metric, size, r)
            x = x + layer.mlp(layer.layer_norm2(x))
            idx = dest.gather(1, idx)
            if recorded.shape[1] == x.shape[1]:
                torch.testing.assert_close(recorded, x, rtol=0, atol=1e-5)
        full = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    assert torch.equal(idx, index)
    torch.testing.assert_close(final, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, model.post_layernorm(full), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pooler_output, model.head(model.post_layernorm(full)), rtol=0, atol=1e-5)


def test_clip_keeps_its_class_token_first_and_unmerged():
    model, frames = tiny_clip(), moving_frames(2)
    rs = ToMe.schedule(tokens=17, layers=3, keep=5, class_token=True)
    assert rs == [4, 4, 4]
    tome = ToMe(4).attach(model)
    out = run(model, frames)
    assert tome.tokens == [13, 9, 5]
    assert [h.shape[1] for h in out.hidden_states] == [17, 13, 9, 17]
    assert out.last_hidden_state.shape == (2, 17, 32)
    assert tome.index_map[:, 0].tolist() == [0, 0] and bool((tome.index_map[:, 1:] > 0).all())
    torch.testing.assert_close(out.pooler_output, model.post_layernorm(out.last_hidden_state[:, 0]))


# -- schedule, detach, refusals -----------------------------------------------------------------------


def test_schedule_hand_worked_values():
    assert ToMe.schedule(tokens=729, layers=26, keep=223) == [20] * 12 + [19] * 14  # 506 = 12*20 + 14*19
    assert ToMe.schedule(tokens=16, layers=3, keep=6) == [4, 3, 3]
    assert ToMe.schedule(tokens=16, layers=3, keep=2) == [8, 4, 2]  # the half cap forces halving throughout
    assert ToMe.schedule(tokens=16, layers=3, keep=16) == [0, 0, 0]
    assert ToMe.schedule(tokens=17, layers=3, keep=3, class_token=True) == [8, 4, 2]
    with pytest.raises(ValueError, match="at least 2 remain"):
        ToMe.schedule(tokens=16, layers=3, keep=1)
    with pytest.raises(ValueError, match="at least 3 remain"):
        ToMe.schedule(tokens=17, layers=3, keep=2, class_token=True)
    with pytest.raises(ValueError, match="keep in"):
        ToMe.schedule(tokens=16, layers=3, keep=17)


@pytest.mark.parametrize("class_token", [False, True])
def test_schedule_reaches_keep_within_the_caps_whenever_possible(class_token):
    p = int(class_token)
    for tokens in range(p, 40):
        for layers in range(1, 5):
            for keep in range(p, tokens + 1):
                if math.ceil((tokens - p) / 2**layers) + p > keep:
                    with pytest.raises(ValueError):
                        ToMe.schedule(tokens, layers, keep, class_token=class_token)
                    continue
                rs, t = ToMe.schedule(tokens, layers, keep, class_token=class_token), tokens
                for r in rs:
                    assert 0 <= r <= (t - p) // 2
                    t -= r
                assert t == keep and len(rs) == layers
                assert rs == sorted(rs, reverse=True)  # larger r first


def test_detach_restores_the_stock_model_exactly():
    model, frames = tiny_siglip(), moving_frames(2)
    stock = run(model, frames)
    tome = ToMe(3).attach(model)
    assert not torch.equal(run(model, frames).last_hidden_state, stock.last_hidden_state)
    tome.detach()
    assert all("forward" not in layer.__dict__ for layer in model.encoder.layers)
    assert tome.tokens == [] and tome.index_map is None
    after = run(model, frames)
    assert torch.equal(after.last_hidden_state, stock.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(after.hidden_states, stock.hidden_states, strict=True))
    tome.detach()  # a no-op
    assert ToMe(3).attach(model) is not None  # attachable again


def test_bad_arguments_and_calls_are_refused():
    for r in (-1, [1, -2, 0], 1.5, True):
        with pytest.raises(ValueError, match="r must be a non-negative integer"):
            ToMe(r)
    with pytest.raises(ValueError, match="r has 2 entries for 3 encoder layers"):
        ToMe([1, 2]).attach(tiny_siglip())
    with pytest.raises(ValueError, match="cannot find the encoder layers of Linear"):
        ToMe(1).attach(torch.nn.Linear(2, 2))

    model = tiny_siglip()
    tome = ToMe(1).attach(model)
    with pytest.raises(ValueError, match="already attached"):
        tome.attach(model)
    with pytest.raises(ValueError, match="already patched"):
        ToMe(1).attach(model)
    with pytest.raises(ValueError, match="unmasked vision encoders only"):
        model.encoder.layers[0](torch.zeros(1, 16, 32), attention_mask=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="without output_attentions"):
        model(pixel_values=moving_frames(1), output_attentions=True)
