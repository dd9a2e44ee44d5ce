"""RoPE for ReKV's memory (``rekv_memory.py``): keys are kept before RoPE and rotated at whatever position
the phase gives them, so every layer rotates its whole window again for every frame.

The cos and sin of those angles are the same in every layer and every frame: ``RopeTable`` computes them
once, for positions 0, 1, ... (grown on demand), and a rotation gathers its rows: the same float32 steps
per position as computing them per call, without the eight small kernels and the window-sized ``cos``
and ``sin`` per call. (Only the platform's rounding of ``cos`` and ``sin`` may differ: on the dev CPU it
is not even the same from one process to the next for angles in the hundreds.)
"""

from __future__ import annotations

import torch


class RopeTable:
    """cos and sin of RoPE's angles (rotate-half convention, as Qwen2; float32) at base ``theta``, per head
    size and device, for positions ``0 .. rows - 1``.

    Example:
        >>> rope = RopeTable(theta=1e6)
        >>> rope.rotate(keys, positions, bound=keys.shape[1])  # [Hkv, L, D] at positions [L] in [0, bound)
    """

    def __init__(self, theta: float) -> None:
        self.theta = theta
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        # Tables outgrown: a CUDA graph recorded on one reads it by address, and its rows stay right.
        self._outgrown: list[tuple[torch.Tensor, torch.Tensor]] = []

    def rotate(self, x: torch.Tensor, positions: torch.Tensor, bound: int) -> torch.Tensor:
        """``x [*, L, D]`` rotated to ``positions [L]``; a position outside ``[0, bound)`` is taken as the
        nearest inside (callers mask those tokens out)."""
        dim = x.shape[-1]
        cos, sin = self._rows(dim, x.device, bound)
        at = positions.clamp(0, bound - 1)
        x32 = x.float()
        half = dim // 2
        rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
        return (x32 * cos[at] + rotated * sin[at]).to(x.dtype)

    def _rows(self, dim: int, device: torch.device, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, device)
        table = self._tables.get(key)
        if table is not None and table[0].shape[0] >= rows:
            return table
        if table is not None:
            self._outgrown.append(table)
            rows = max(rows, 2 * table[0].shape[0])  # doubling: a long answer grows it a few times only
        with torch.inference_mode(False):  # plain tensors, readable in and outside inference mode
            inv_freq = 1.0 / (
                self.theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
            )
            angles = torch.arange(rows, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
            angles = torch.cat((angles, angles), dim=-1)
            table = self._tables[key] = (angles.cos(), angles.sin())
        return table
