import pytest
import torch

from stc_cli.compress import STCCacher
from stc_cli.compress.prelnvit_cacher import key_cosine
from tests.compress.models import moving_frames, tiny_clip, tiny_siglip
from tests.compress.spec_reference import ReferenceCacher, encoder_input

TOWERS = {"siglip": tiny_siglip, "clip": tiny_clip}


def run(model, pixels, **kwargs):
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True, **kwargs)


def chunks(frames_per_chunk, n_chunks, seed=0):
    return moving_frames(frames_per_chunk * n_chunks, seed=seed).split(frames_per_chunk)


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("frames_per_chunk", [1, 3])
@pytest.mark.parametrize("interval", [2, 3])
def test_selective_path_matches_step_by_step_spec(tower, frames_per_chunk, interval):
    stock, model = TOWERS[tower](), TOWERS[tower]()
    spec = ReferenceCacher(stock, update_ratio=0.25, interval=interval)
    cacher = STCCacher(update_ratio=0.25, interval=interval).attach(model)
    n_selective = 0
    for c, pixels in enumerate(chunks(frames_per_chunk, 6)):
        expected, expected_sel = spec.run_chunk(encoder_input(stock, pixels))
        out = run(model, pixels)
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=1e-5)
            got = cacher.selected[layer]
            if c % interval == 0:
                assert got is None and expected_sel[layer] is None
            else:
                n_selective += 1
                assert got.shape == (frames_per_chunk, 4)  # int(16 tokens * 0.25)
                assert [set(row.tolist()) for row in got] == expected_sel[layer]
    assert n_selective == 3 * (6 - len(range(0, 6, interval)))  # 3 layers x selective chunks


@pytest.mark.parametrize("tower", TOWERS)
def test_similarity_threshold_recomputes_tokens_below_it(tower):
    stock, model = TOWERS[tower](), TOWERS[tower]()
    spec = ReferenceCacher(stock, interval=2, similarity_threshold=0.9)
    STCCacher(interval=2, similarity_threshold=0.9).attach(model)
    for pixels in chunks(3, 4, seed=1):
        expected, _ = spec.run_chunk(encoder_input(stock, pixels))
        out = run(model, pixels)
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tower", TOWERS)
def test_full_update_ratio_equals_stock_model(tower):
    stock, model = TOWERS[tower](), TOWERS[tower]()
    cacher = STCCacher(update_ratio=1.0, interval=2).attach(model)
    for pixels in chunks(2, 4):
        want, got = run(stock, pixels), run(model, pixels)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=0, atol=1e-6)
    assert cacher.selected[0].shape == (2, 16 if tower == "siglip" else 17)


@pytest.mark.parametrize("tower", TOWERS)
def test_reference_chunks_are_bit_identical_to_stock(tower):
    stock, model = TOWERS[tower](), TOWERS[tower]()
    cacher = STCCacher(update_ratio=0.25, interval=2).attach(model)
    for c, pixels in enumerate(chunks(2, 5)):
        want, got = run(stock, pixels), run(model, pixels)
        if c % 2 == 0:
            assert torch.equal(got.last_hidden_state, want.last_hidden_state)
            assert all(torch.equal(a, b) for a, b in zip(got.hidden_states, want.hidden_states, strict=True))
        else:
            assert not torch.equal(got.last_hidden_state, want.last_hidden_state)
    cacher.reset()  # a new video: the next chunk is a reference chunk again, whatever the counter said
    pixels = chunks(2, 5)[1]
    assert torch.equal(run(model, pixels).last_hidden_state, run(stock, pixels).last_hidden_state)
    assert cacher.selected == [None, None, None]


def test_outputs_keep_their_stock_meaning():
    model = tiny_siglip()
    STCCacher(interval=2).attach(model)
    pixels = chunks(1, 2)
    run(model, pixels[0])
    out = run(model, pixels[1])  # selective
    with torch.no_grad():
        assert torch.equal(out.last_hidden_state, model.post_layernorm(out.hidden_states[-1]))


@pytest.mark.parametrize("tower", TOWERS)
def test_detach_restores_the_stock_model(tower):
    stock, model = TOWERS[tower](), TOWERS[tower]()
    run(model, chunks(1, 1)[0])  # transformers installs hooks of its own on first use

    def hook_counts():
        return [len(m._forward_hooks) for m in model.modules()] + [len(model.encoder._forward_pre_hooks)]

    stock_hooks = hook_counts()
    cacher = STCCacher(interval=2).attach(model)
    for pixels in chunks(1, 3):
        run(model, pixels)
    assert cacher.state_nbytes() > 0 and hook_counts() != stock_hooks
    cacher.detach()
    assert cacher.state_nbytes() == 0
    assert all("forward" not in layer.__dict__ for layer in model.encoder.layers)
    assert hook_counts() == stock_hooks and not hasattr(model, "_stc_cacher")
    for pixels in chunks(1, 3):  # every chunk is stock again, including odd ones
        assert torch.equal(run(model, pixels).last_hidden_state, run(stock, pixels).last_hidden_state)
    STCCacher().attach(model)  # and it can take a cacher again


def test_layers_found_under_vision_model():
    from transformers import SiglipConfig, SiglipModel

    from stc_cli.models.presets import VISION_PRESETS

    torch.manual_seed(0)
    two_tower = SiglipModel(
        SiglipConfig(
            vision_config=VISION_PRESETS["tiny"],
            text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
            ),
        )
    ).eval()
    cacher = STCCacher(update_ratio=1.0).attach(two_tower)
    pixels = chunks(1, 2)
    with torch.no_grad():
        for p in pixels:
            two_tower.get_image_features(pixel_values=p)
    assert cacher.selected[0] is not None and cacher.selected[0].shape == (1, 16)  # 2nd chunk was selective


def test_two_cachers_on_two_models_do_not_interfere():
    a, b = tiny_siglip(seed=0), tiny_siglip(seed=1)
    alone_a, alone_b = tiny_siglip(seed=0), tiny_siglip(seed=1)
    for model, interval in ((a, 2), (b, 3), (alone_a, 2), (alone_b, 3)):
        STCCacher(interval=interval).attach(model)
    frames_a, frames_b = chunks(1, 5, seed=0), chunks(1, 5, seed=1)
    expected_a = [run(alone_a, p).last_hidden_state for p in frames_a]
    expected_b = [run(alone_b, p).last_hidden_state for p in frames_b]
    for i in range(5):  # interleaved
        assert torch.equal(run(a, frames_a[i]).last_hidden_state, expected_a[i])
        assert torch.equal(run(b, frames_b[i]).last_hidden_state, expected_b[i])


def test_resolution_change_runs_a_reference_pass():
    stock, model = tiny_siglip(), tiny_siglip()
    cacher = STCCacher(interval=2).attach(model)
    run(model, chunks(1, 1)[0])
    bigger = moving_frames(1, size=48)  # 36 tokens instead of 16: no usable reference
    got = run(model, bigger, interpolate_pos_encoding=True)
    assert cacher.selected == [None, None, None]
    assert torch.equal(
        got.last_hidden_state, run(stock, bigger, interpolate_pos_encoding=True).last_hidden_state
    )


def test_state_is_bounded():
    model = tiny_siglip()
    cacher = STCCacher(interval=2).attach(model)
    frames = chunks(1, 40)
    run(model, frames[0])
    run(model, frames[1])
    after_two = cacher.state_nbytes()
    for pixels in frames[2:]:
        run(model, pixels)
    assert after_two == cacher.state_nbytes() == 3 * 4 * 16 * 32 * 4  # layers x K,V,A,M x [16, 32] float32


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_stock_at_full_ratio_and_runs_selective(dtype, device):
    stock, model = tiny_siglip(dtype=dtype).to(device), tiny_siglip(dtype=dtype).to(device)
    frames = [pixels.to(device, dtype) for pixels in chunks(2, 3)]
    full = STCCacher(update_ratio=1.0, interval=2).attach(model)
    for pixels in frames:
        got, want = run(model, pixels).last_hidden_state, run(stock, pixels).last_hidden_state
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=0, atol=5e-2)
    full.detach()
    STCCacher(update_ratio=0.25, interval=2).attach(model)
    for pixels in frames:
        assert torch.isfinite(run(model, pixels).last_hidden_state).all()


def test_a_model_converted_after_attach_runs_on_its_new_parameters():
    """The selective layers read the layers' parameters gathered once at the first chunk; ``.double()``
    after that changes those parameters in place, so the cacher then computes what one attached to a
    float64 copy does, bit for bit."""
    converted, fresh = tiny_siglip(), tiny_siglip().double()
    cacher, fresh_cacher = STCCacher(interval=2).attach(converted), STCCacher(interval=2).attach(fresh)
    for pixels in chunks(1, 2):  # float32: the weights are gathered
        run(converted, pixels)
    converted.double()
    cacher.reset()
    for pixels in chunks(1, 4, seed=1):
        pixels = pixels.double()
        assert torch.equal(run(converted, pixels).last_hidden_state, run(fresh, pixels).last_hidden_state)
    assert cacher.selected[0] is not None and torch.equal(cacher.selected[0], fresh_cacher.selected[0])


def test_option_and_attach_errors():
    with pytest.raises(ValueError, match="update_ratio"):
        STCCacher(update_ratio=0.0)
    with pytest.raises(ValueError, match="interval"):
        STCCacher(interval=0)
    with pytest.raises(ValueError, match="similarity_threshold"):
        STCCacher(similarity_threshold=1.5)
    model = tiny_siglip()
    cacher = STCCacher().attach(model)
    with pytest.raises(ValueError, match="already attached"):
        cacher.attach(tiny_siglip())
    with pytest.raises(ValueError, match="already has an STCCacher"):
        STCCacher().attach(model)
    with pytest.raises(ValueError, match="cannot find the encoder layers"):
        STCCacher().attach(torch.nn.Linear(2, 2))


def test_replay_key_says_the_chunk_kind_and_where_the_references_live():
    model = tiny_siglip()
    cacher = STCCacher(interval=2).attach(model)
    assert cacher.replay_key() == ("reference",)  # nothing kept yet: chunk 0 is a reference chunk
    pixels = chunks(1, 3)
    run(model, pixels[0])
    kind, *where = cacher.replay_key()
    refs = cacher._references
    assert kind == "selective"
    assert where == [t.data_ptr() for r in refs for t in (r.key, r.value, r.attn_out, r.mlp_out)]
    run(model, pixels[1])
    assert cacher.replay_key() == ("reference",)  # the reference of chunk 2 does not read the old one


def test_replayed_counts_the_chunk_and_puts_back_what_it_left():
    model = tiny_siglip()
    cacher = STCCacher(interval=2).attach(model)
    pixels = chunks(1, 3)
    run(model, pixels[0])
    after_reference = cacher.chunk_state()
    run(model, pixels[1])
    after_selective = cacher.chunk_state()
    cacher.reset()
    cacher.replayed(after_reference)  # as if chunk 0 had been replayed from its graph
    assert cacher.replay_key()[0] == "selective"
    assert [r.key for r in cacher._references] == [r.key for r in after_reference[0]]
    assert cacher.selected == [None, None, None]
    cacher.replayed(after_selective)
    assert cacher.replay_key() == ("reference",)
    assert cacher.selected == after_selective[1] and cacher.selected[0].shape == (1, 4)


@pytest.mark.parametrize("threshold", [0.9, None], ids=["similarity_threshold", "qwen2vl"])
def test_replay_key_refuses_what_a_graph_cannot_replay(threshold):
    from tests.compress.qwen2vl_models import tiny_qwen2vl

    cacher = STCCacher(similarity_threshold=threshold)
    cacher.attach(tiny_siglip() if threshold else tiny_qwen2vl())
    with pytest.raises(ValueError, match="SigLIP and CLIP towers without similarity_threshold only"):
        cacher.replay_key()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_key_cosine_is_torchs_cosine_similarity_bit_for_bit(device):
    """The cacher's own cosine (without the two copies ``F.cosine_similarity`` makes) ranks the tokens
    exactly as the spec's ``cosine(K[f, t], K_ref[t])`` does, zero keys included (eps)."""
    generator = torch.Generator().manual_seed(0)
    for frames, channels in ((1, 1152), (4, 72), (16, 1280)):
        for dtype in (torch.float32, torch.float16):
            key = (3 * torch.randn(frames, 729, channels, generator=generator)).to(dtype)
            key_ref = (3 * torch.randn(729, channels, generator=generator)).to(dtype)
            key[0, 5], key_ref[7] = 0, 0
            key, key_ref = key.to(device).float(), key_ref.to(device).float()
            want = torch.nn.functional.cosine_similarity(key, key_ref.unsqueeze(0), dim=-1)
            assert torch.equal(key_cosine(key, key_ref), want), (frames, channels, dtype)
