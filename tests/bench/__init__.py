"""`stc bench`'s stages on tiny presets on a CPU; ``TINY`` is the run they share."""

from stc_cli.bench.decode import QUESTION_TOKENS
from stc_cli.bench.prefill import REKV_INIT_TOKENS
from stc_cli.configs import BenchConfig

# 1 warm-up + 2 timed chunks, one repeat; the tiny LLM gets 4 pooled tokens per frame and keeps 2.
TINY = BenchConfig(
    vision="tiny", llm="tiny", tokens_per_frame=2, frames=2, warmup=1, repeats=1, state_frames=0, device="cpu"
)
INIT, QUESTION = REKV_INIT_TOKENS, QUESTION_TOKENS
