"""VisionZip (``stc_cli/compress/visionzip.py``): a frame worked out by hand, upstream's CLS path on seeded
inputs, and the attention statistics against a plain eager computation on the tiny towers."""

import json
from pathlib import Path

import pytest
import torch

from stc_cli.compress.visionzip import VisionZip, attention_stats, scores_from_attention, target_positions
from tests.compress.models import moving_frames, tiny_clip, tiny_siglip

# Written by running [VZ] clip_encoder.py's CLIPVisionTower_VisionZip.forward (dvlab-research/VisionZip
# 3151f6d, unmodified, CPU float32, transformers 4.37.2) with a stub tower returning the inputs below;
# upstream is given ``dominant - 1`` as its main.py:7 does, so that ``dominant`` counts the CLS on both sides.
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "visionzip_reference.json").read_text())


def inputs(seed, frames, tokens, heads, channels, keys):
    """Seeded attention probabilities [F, H, T, T], hidden states and key metric (the reference's recipe)."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(frames, heads, tokens, tokens, generator=g), dim=-1)
    hidden = torch.randn(frames, tokens, channels, generator=g)
    metric = torch.randn(frames, tokens, keys, generator=g)
    return probs, hidden, metric


def test_full_budget_returns_hidden_unchanged():
    g = torch.Generator().manual_seed(0)
    hidden, scores, metric = (
        torch.randn(3, 16, 8, generator=g),
        torch.rand(3, 16, generator=g),
        torch.randn(3, 16, 4),
    )
    vz = VisionZip(dominant=16, contextual=0)
    assert torch.equal(vz.compress(hidden, scores, metric), hidden)
    assert torch.equal(vz.last_indices, torch.arange(16).expand(3, 16))


def test_a_frame_worked_by_hand():
    # Dominant: the two best scores, tokens 1 (0.9) and 4 (0.8), in index order.
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.8, 0.0, 0.5, 0.4, 0.6]])
    hidden = torch.tensor([[[i + 1.0, 10.0 * (i + 1)] for i in range(9)]])
    # The rest, 0 2 3 5 6 7 8 (R = 7): stride 7 // 3 = 2 puts the targets at rest positions 0, 2, 4 = tokens
    # 0, 3, 6. By cosine, 2 -> 3 (a dot product would pick 0, whose key is long), 5 -> 6, 7 -> 6, 8 -> 3;
    # target 0 gets nothing. Keys of the dominant tokens do not matter.
    metric = torch.tensor(
        [[[5, 0], [9, 9], [1, 2], [0, 0.1], [9, 9], [-1, -0.2], [-1, 0], [-0.5, 0.1], [0.2, 3]]]
    )
    vz = VisionZip(dominant=2, contextual=3)
    out = vz.compress(hidden, scores, metric)
    assert vz.last_indices.tolist() == [[1, 4]]
    expected = [
        [2, 20],  # token 1
        [5, 50],  # token 4
        [1, 10],  # target 0 + nothing: adds zero, not 0 / 0
        [4 + 6, 40 + 60],  # target 3 + mean(token 2, token 8) = (4, 40) + ((3, 30) + (9, 90)) / 2
        [7 + 7, 70 + 70],  # target 6 + mean(token 5, token 7) = (7, 70) + ((6, 60) + (8, 80)) / 2
    ]
    assert torch.equal(out, torch.tensor([expected], dtype=torch.float32))


def test_frames_are_compressed_independently():
    probs, hidden, metric = inputs(5, 3, 17, 2, 4, 8)
    scores = scores_from_attention(probs)
    vz = VisionZip(5, 4)
    together = vz.compress(hidden, scores, metric)
    for f in range(3):
        assert torch.equal(
            vz.compress(hidden[f : f + 1], scores[f : f + 1], metric[f : f + 1])[0], together[f]
        )


def test_targets_use_upstream_s_stride_leaving_the_remainder_at_the_tail():
    assert target_positions(7, 3).tolist() == [0, 2, 4]  # 6 is not a target
    assert target_positions(13, 3).tolist() == [0, 4, 8]  # 9..12 are not
    assert target_positions(20, 6).tolist() == [0, 3, 6, 9, 12, 15]
    assert target_positions(10, 10).tolist() == list(range(10))  # every rest token is a target
    assert target_positions(675, 10).tolist() == list(
        range(0, 603 + 1, 67)
    )  # SigLIP 729 - 54: 72 in the tail


@pytest.mark.parametrize(
    "case", REFERENCE["cases"], ids=lambda c: f"seed{c['seed']}-{c['dominant']}+{c['contextual']}"
)
def test_the_cls_path_reproduces_upstream_exactly(case):
    probs, hidden, metric = inputs(
        *(case[k] for k in ("seed", "frames", "tokens", "heads", "channels", "keys"))
    )
    total = probs.double().sum() + hidden.double().sum() + metric.double().sum()
    assert float(total) == pytest.approx(case["input_sum"], abs=1e-6)  # the same inputs
    vz = VisionZip(case["dominant"], case["contextual"])
    out = vz.compress(hidden, scores_from_attention(probs, cls=True), metric)
    assert vz.last_indices.tolist() == case["indices"]  # the CLS (0) included
    assert torch.equal(out, torch.tensor(case["output"], dtype=torch.float32))


def eager_probs(layer, hidden_in):
    """softmax(q k^T * scale) of each frame and head, one at a time; and the keys [F, H, T, d]."""
    attn, x = layer.self_attn, layer.layer_norm1(hidden_in)
    q, k = attn.q_proj(x), attn.k_proj(x)
    d = attn.head_dim
    heads = q.shape[-1] // d
    probs = torch.stack(
        [
            torch.stack(
                [
                    torch.softmax(
                        q[f, :, h * d : (h + 1) * d] @ k[f, :, h * d : (h + 1) * d].T * attn.scale, dim=-1
                    )
                    for h in range(heads)
                ]
            )
            for f in range(x.shape[0])
        ]
    )
    return probs, k.view(*k.shape[:2], heads, d).transpose(1, 2)


@pytest.mark.parametrize("tower", ["siglip", "clip"])
def test_attention_stats_match_an_eager_computation(tower):
    model = {"siglip": tiny_siglip, "clip": tiny_clip}[tower]()
    with torch.no_grad():
        hs = model(pixel_values=moving_frames(3), output_hidden_states=True).hidden_states
        layer = model.encoder.layers[-2]
        probs, keys = eager_probs(layer, hs[-3])  # the input of layer -2
        # The hand computation is the tower's own attention (eager, so it returns the weights).
        model.set_attn_implementation("eager")
        own = model(pixel_values=moving_frames(3), output_attentions=True).attentions[-2]
    torch.testing.assert_close(probs, own, rtol=0, atol=1e-6)
    tokens = 17 if tower == "clip" else 16
    assert probs.shape == (3, 4, tokens, tokens)

    scores, metric = attention_stats(layer, hs[-3])
    torch.testing.assert_close(scores, probs.mean(dim=(1, 2)), rtol=0, atol=1e-6)  # attention received
    torch.testing.assert_close(metric, keys.mean(dim=1), rtol=0, atol=1e-6)
    assert scores.shape == (3, tokens) and metric.shape == (3, tokens, 8)

    tokens_out = VisionZip.at_budget(8).compress(hs[-2], scores, metric)  # the output of layer -2
    assert tokens_out.shape == (3, 8, 32)
    if tower == "clip":
        cls_scores, cls_metric = attention_stats(layer, hs[-3], cls=True)
        assert torch.isinf(cls_scores[:, 0]).all()
        torch.testing.assert_close(cls_scores[:, 1:], probs[:, :, 0, 1:].sum(dim=1), rtol=0, atol=1e-6)
        assert torch.equal(cls_metric, metric)
        vz = VisionZip(4, 2)
        vz.compress(hs[-2], cls_scores, cls_metric)
        expected = probs[:, :, 0, 1:].sum(dim=1).topk(3).indices.sort().values + 1
        assert torch.equal(vz.last_indices, torch.cat([torch.zeros(3, 1, dtype=torch.long), expected], dim=1))


@pytest.mark.parametrize(("budget", "split"), [(64, (54, 10)), (60, (51, 9)), (16, (14, 2)), (4, (3, 1))])
def test_at_budget_keeps_upstream_s_54_to_10_split(budget, split):
    vz = VisionZip.at_budget(budget)
    assert (vz.dominant, vz.contextual) == split  # 60: 9.375 -> 9; 16: 2.5 -> 2 (half to even); 4: 0.625 -> 1


def test_at_budget_edges_and_errors():
    assert (VisionZip.at_budget(2).dominant, VisionZip.at_budget(2).contextual) == (1, 1)  # 0.31 -> 0, raised
    assert (VisionZip.at_budget(1).dominant, VisionZip.at_budget(1).contextual) == (1, 0)
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="VisionZip budget must be an int >= 1"):
            VisionZip.at_budget(bad)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="counts >= 0"):
        VisionZip(-1, 3)
    with pytest.raises(ValueError, match="counts >= 0"):
        VisionZip(0, 0)
    hidden, scores, metric = torch.zeros(2, 8, 4), torch.zeros(2, 8), torch.zeros(2, 8, 3)
    with pytest.raises(ValueError, match=r"keeps 6 \+ 3 tokens of only 8"):
        VisionZip(6, 3).compress(hidden, scores, metric)
    for h, s, m in [
        (hidden[0], scores, metric),
        (hidden, scores[:, :7], metric),
        (hidden, scores, metric[:1]),
    ]:
        with pytest.raises(
            ValueError, match=r"needs hidden \[F, N, C\], scores \[F, N\], metric \[F, N, K\]"
        ):
            VisionZip(4, 2).compress(h, s, m)
