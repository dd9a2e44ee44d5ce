import shutil

import pytest
import torch

from stc_cli.accel import compile_layers
from stc_cli.compress import STCCacher
from tests.compress.models import moving_frames, tiny_siglip
from tests.compress.qwen2vl_models import tiny_qwen2vl

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on a CPU needs g++")


def hidden_states(tower, pixels):
    return tower(pixel_values=pixels, output_hidden_states=True).hidden_states


@needs_compiler
@torch.inference_mode()
def test_compiled_layers_compute_what_the_eager_layers_do():
    """The stock tower on the compiled layer function, and STC-Cacher's compiled reference and selective
    paths, against the same towers run eagerly, chunk by chunk (a few float32 ulps apart)."""
    towers = {name: tiny_siglip() for name in ("stock", "eager", "stc", "eager_stc")}
    compile_layers(towers["stock"])
    cacher = STCCacher(interval=2, compile=True).attach(towers["stc"])
    eager_cacher = STCCacher(interval=2).attach(towers["eager_stc"])
    for pixels in moving_frames(6).split(2):
        for compiled, eager in (("stock", "eager"), ("stc", "eager_stc")):
            got_states, want_states = (
                hidden_states(towers[compiled], pixels),
                hidden_states(towers[eager], pixels),
            )
            for got, want in zip(got_states, want_states, strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        for got, want in zip(cacher.selected, eager_cacher.selected, strict=True):
            assert (got is None) == (want is None)
            if got is not None:  # the same rows recomputed, in whatever order
                assert [set(r.tolist()) for r in got] == [set(r.tolist()) for r in want]
    assert cacher.selected[0] is None and eager_cacher.state_nbytes() == cacher.state_nbytes()


def test_compiling_refuses_what_it_cannot_compile():
    with pytest.raises(ValueError, match="compile_layers supports SigLIP and CLIP towers"):
        compile_layers(tiny_qwen2vl())
    with pytest.raises(ValueError, match="compile=True supports SigLIP and CLIP towers"):
        STCCacher(compile=True).attach(tiny_qwen2vl())
    with pytest.raises(ValueError, match="without similarity_threshold"):
        STCCacher(compile=True, similarity_threshold=0.9).attach(tiny_siglip())
