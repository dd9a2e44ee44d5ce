"""Where a run's time went, from the per-record timings and counts of its ``samples.jsonl``.

A record carries the cost of the frames its query added (stream schedule: those since the previous
query of its video; clip schedule: its whole window), so sums over records are the run's totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

FRAME_STAGES = ("decode", "vit", "compress", "memory", "prefill")  # paid per frame (or per question)
ANSWER_STAGE = "answer"  # paid per query: retrieval, prompt prefill, decoding


@dataclass(frozen=True)
class TimingSummary:
    records: int
    frames: int  # frames encoded
    # Means over nothing (no frame encoded, no query answered) are None: JSON has no NaN.
    ms_per_frame: dict[str, float | None]  # the stages the run had (no ``compress`` without STC)
    answer_ms: float | None  # per answered query
    tokens_in_per_frame: float | None  # visual tokens per frame before compression
    tokens_kept_per_frame: float | None  # ... and those the LLM received

    def to_json(self) -> dict:
        return asdict(self)


def summarize(records: list[dict]) -> TimingSummary | None:
    """Per-frame stage times and token counts; None for records without timings (upstream files). A NaN
    a record holds stays NaN here: writers of JSON turn it into null (``scoring.finite``)."""
    timed = [r for r in records if isinstance(r.get("timings_ms"), dict)]
    if not timed:
        return None

    def total(field: str, key: str) -> float:
        return sum(float((r.get(field) or {}).get(key, 0)) for r in timed)

    frames = int(total("counts", "frames_encoded"))
    answered = sum(ANSWER_STAGE in r["timings_ms"] for r in timed)
    present = {stage for r in timed for stage in r["timings_ms"]}
    stages = [stage for stage in FRAME_STAGES if stage in present]
    per_frame = {stage: total("timings_ms", stage) / frames if frames else None for stage in stages}
    return TimingSummary(
        records=len(timed),
        frames=frames,
        ms_per_frame=per_frame,
        answer_ms=total("timings_ms", ANSWER_STAGE) / answered if answered else None,
        tokens_in_per_frame=total("counts", "visual_tokens_in") / frames if frames else None,
        tokens_kept_per_frame=total("counts", "visual_tokens_kept") / frames if frames else None,
    )
