"""A stock SigLIP or CLIP tower whose layers run through ``torch.compile``, exactly as the reference
chunks of ``STCCacher(compile=True)`` do: the same compiled function of the same weights, so that a
comparison of the two gives both sides the same kernels."""

from __future__ import annotations

from torch import nn

from stc_cli.compress.cacher import compiled
from stc_cli.compress.prelnvit_cacher import PreLNViTLayers, layer_outputs, weights_of


def compile_layers(tower: nn.Module) -> nn.Module:
    """Patch every encoder layer of ``tower`` (SigLIP, CLIP) to run the compiled layer math; returns it."""
    found = PreLNViTLayers().locate(tower)
    if found is None:
        raise ValueError(f"compile_layers supports SigLIP and CLIP towers, not {type(tower).__name__}")
    layer_math = compiled(layer_outputs)
    for layer in found[1]:
        weights = weights_of(layer)

        def forward(hidden_states, attention_mask=None, *_args, weights=weights, **_kwargs):
            if attention_mask is not None:
                raise ValueError("compiled layers support unmasked vision encoders only")
            return layer_math(hidden_states, weights)[0]

        layer.forward = forward
    return tower
