"""`stc bench`: STC latency on random-weight models at real sizes, STC on and off side by side.

Frames are streamed one chunk at a time, as ReKV + STC does, through:
  ViT (SigLIP preset) stock vs with the cacher -> projector + 2x2 bilinear pool (not timed)
  -> pruner (timed) -> LLM prefill into a growing KV cache, all pooled tokens vs the kept ones.
A chunk is one ViT call of ``--frames-per-chunk`` frames (default one), pruned and prefilled in one call
too (as ``stc eval --encode-chunk``); its time is reported per frame.
With a Qwen2-VL preset (LiveCC's tower) a chunk holds whole temporal patches (two frames each, packed
with ``grid_thw``), and the LLM gets the patch merger's tokens (its output already has the LLM width), so
the pruner and prefill work per temporal patch on merged tokens (364 at 392 x 728 px).
Optional rows: prefill through ReKV's memory once its window is full (``--long-stream``), greedy
decoding after a prefill (``--decode-tokens``), and the compression baselines beside STC at its budget
(``--compress``: ToMe in the ViT rows, VidCom², VisionZip and DTD beside the pruner).
Every compared pair runs in one process on the same frames, interleaved chunk by chunk; the
reported figure is the median over repeats of the mean over chunks.

run.py runs the stages in order (run_bench); timer.py times them; inputs.py makes the frames and the
LLM's tokens; vit.py, prefill.py, decode.py, baselines.py and state.py are the stages.
"""

from stc_cli.bench.run import run_bench

__all__ = ["run_bench"]
