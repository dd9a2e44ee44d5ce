"""Trains the demo model shipped with stc as ``--model-path demo``: LLaVA-OneVision at the ``random:demo``
architecture (the tiny SigLIP tower at 56 px, projector, 2x2 pooling to 16 tokens per frame, a 3-layer
Qwen2 with the byte-level tokenizer), on clips from the demo benchmark's own generator
(``stc_cli/benchmarks/demo_scenes.py``) with seeds the shipped demo never uses. CPU only, deterministic
given ``--seed`` and ``--threads``; the default run takes about 13 minutes on 2 cores.

The recipe: no STC (the cacher and the pruner act at inference, training-free). An example is what ReKV's
answer cache holds for a demo question under the ``stc-online`` protocol: the init prompt, the frames the
stream showed before the question's time (1 fps, the protocol's stride rule, decoded from mp4 as the
benchmark's are), then the prompt as it is; the target is the answer, then ``<|im_end|>``. ReKV attends
that cache at contiguous positions, so a plain causal forward trains what it runs, as long as every frame
is retrieved (``--topk`` at least the clip's frames) and the window holds the clip (``--n-local``).

Besides the answer, two losses on the visual tokens, from the scene's script (each token blends a
footprint of the frame: ``FOOTPRINT``):

- ``--describe``: a linear probe (trained here, not shipped) reads from each token how much of its
  footprint the square covers and, where it covers a quarter or more, the square's colour and the token's
  column. Without it the model never learned where the square is: position and direction stayed at what
  the questions alone give.
- ``--local``: the tokens the square does not come near (``NEAR`` px) must all look alike, wherever they
  are: their spread, as a share of all tokens' spread. Without it the tower's global attention spreads
  the square over every token, so that which tokens a pruner keeps changes no answer, and nothing here
  could notice a pruner that keeps the wrong ones.

With probability ``--drop`` an example keeps, per frame, the same random number of its tokens (in their
order): a large pretrained model does not depend on every one of its 196 tokens per frame, but a model
trained from scratch on 16 does, and then any compression looks like damage. Half of those subsets are
random; the other half (``--salient``) take the square's tokens first, as any pruner that keeps the
content does. With random subsets alone the LLM learned to place the square by where its tokens sit among
the frame's 16, which a pruner that keeps only the square takes away. Neither teaches STC's choice of
tokens: which ones STC keeps still decides what the model can see. docs/benchmarks.md has what each of
these did on the demo.

The model answers with the option's text ("blue", "on the left", "2"), which the robust extractor reads as
that option's letter (rule 4 of ``stc_cli/benchmarks/extract.py``). Trained to answer with the letter
instead, a first try stayed at chance after 400 steps: looking the letter up next to the right option is
a second skill, which says nothing about STC and which the time allowed does not buy.

    .venv/bin/python scripts/train_demo_model.py --out stc_cli/data/demo_model
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stc_cli.benchmarks import demo, demo_scenes
from stc_cli.models import llava_ov
from stc_cli.models.rekv import INIT_PROMPT
from stc_cli.video import Sampling, VideoFrames

FIRST_TRAINING_SEED = 100_000  # the shipped demo's clips use seeds below this (demo_scenes docstring)
# Each of the 4 x 4 pooled tokens blends two of the tower's 7 x 7 patches per axis (the 2x2 bilinear pooling
# samples patch coordinates (j + 0.5) * 7 / 4 - 0.5): its footprint [start, end) per row or column, px at 64.
FOOTPRINT = torch.tensor([(0, 2), (2, 4), (3, 5), (5, 7)]) * (demo_scenes.SIZE / 7)
NEAR = 4  # px: a token's footprint this close to the square counts as near it
COVERED = 0.25  # share of a footprint: a token the square covers, for the probe's colour and column
COLUMN = torch.arange(16) % 4  # each token's column, raster order


@dataclass(frozen=True)
class Tokens:
    """What each of a clip's tokens shows, per sampled frame: the share of its footprint the square covers
    ``[frames, 16]``, whether the square is far from it ``[frames, 16]``, and the square's colour (an index
    into ``COLORS``) ``[frames]``."""

    coverage: torch.Tensor
    far: torch.Tensor
    colour: torch.Tensor

    def __getitem__(self, frames: slice) -> Tokens:
        return Tokens(self.coverage[frames], self.far[frames], self.colour[frames])

    @staticmethod
    def cat(parts: list[Tokens]) -> Tokens:
        return Tokens(*(torch.cat([getattr(p, f) for p in parts]) for f in ("coverage", "far", "colour")))


@dataclass(frozen=True)
class Clip:
    frames: torch.Tensor  # uint8 [frames, H, W, 3], 1 fps
    times: tuple[float, ...]
    questions: list[dict]
    tokens: Tokens


@dataclass(frozen=True)
class Example:
    task: str
    frames: torch.Tensor
    prompt: list[int]
    answer: list[int]
    tokens: Tokens


def overlap(start: float, size: float) -> torch.Tensor:
    """px of ``[start, start + size)`` inside each footprint along one axis ``[4]``."""
    return (FOOTPRINT[:, 1].clamp(max=start + size) - FOOTPRINT[:, 0].clamp(min=start)).clamp(min=0)


def tokens_of(scene: demo_scenes.Scene, times: tuple[float, ...]) -> Tokens:
    """``Tokens`` of ``scene``'s frames at ``times``, from its script."""
    extent = FOOTPRINT[:, 1] - FOOTPRINT[:, 0]
    side, grown = demo_scenes.SIDE, demo_scenes.SIDE + 2 * NEAR
    coverage, near, colour = [], [], []
    for t in times:
        n = min(round(t * demo_scenes.NATIVE_FPS), scene.n_frames - 1)
        x, y = scene.xs[n], scene.y
        coverage.append(torch.outer(overlap(y, side) / extent, overlap(x, side) / extent).flatten())
        near.append(torch.outer(overlap(y - NEAR, grown), overlap(x - NEAR, grown)).flatten() > 0)
        colour.append(demo_scenes.COLORS.index(scene.colors[n]))
    return Tokens(torch.stack(coverage), ~torch.stack(near), torch.tensor(colour))


def clips(count: int, seed: int) -> list[Clip]:
    """``count`` scenes as the benchmark would see them, with what their tokens show."""
    out = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        for index in range(count):
            rng = random.Random(FIRST_TRAINING_SEED + seed * 1_000_000 + index)
            scene = demo_scenes.sample_scene(rng)
            demo_scenes.write_clip(path, demo_scenes.render(scene))
            video = VideoFrames(path, Sampling(1.0), (0.0, math.inf))
            questions = demo_scenes.questions(scene, rng)
            out.append(Clip(video.pixels(), video.times, questions, tokens_of(scene, video.times)))
    return out


class Examples:
    """Training examples drawn from the clips: a question with its options shuffled afresh each time (so
    no letter is favoured), the frames before its time, and the token ids around them."""

    def __init__(self, llava, data: list[Clip], rng: random.Random, drop: float, salient: float):
        self.data, self.rng, self.drop, self.salient = data, rng, drop, salient
        self.tokenizer = llava.tokenizer
        self.init = self.ids(INIT_PROMPT)
        self.eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pairs = [(c, q) for c, clip in enumerate(data) for q in range(len(clip.questions))]

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def thin(self, features: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        """``features [frames, tokens, width]``, or with probability ``drop`` the same random number of
        tokens (at least 2) kept from each frame, in their order: a random subset, or with probability
        ``salient`` the square's tokens (``coverage [frames, tokens]`` above 0) first, as a pruner that
        keeps the content would."""
        frames, tokens, _ = features.shape
        if self.rng.random() >= self.drop:
            return features
        keep = self.rng.randint(2, tokens)
        salient = self.rng.random() < self.salient
        kept = []
        for share in coverage.tolist():
            order = sorted(range(tokens), key=lambda i: (salient and share[i] == 0, self.rng.random()))
            kept.append(sorted(order[:keep]))
        return torch.stack([features[i, index] for i, index in enumerate(kept)])

    def draw(self) -> Example:
        clip_index, index = self.rng.choice(self.pairs)
        clip = self.data[clip_index]
        question = clip.questions[index]
        options = list(question["options"])
        self.rng.shuffle(options)
        visible = sum(t < question["time"] for t in clip.times)
        prompt = self.ids(demo.prompt(question["question"], options))
        answer = self.ids(str(question["answer"])) + [self.eos]
        return Example(question["task"], clip.frames[:visible], prompt, answer, clip.tokens[:visible])


def token_losses(features: torch.Tensor, shown: Tokens, probe) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's loss on ``features [frames, 16, width]`` (coverage, then colour and column where
    covered) and the locality loss (the spread of the far tokens, as a share of all tokens' spread)."""
    out = probe(features)  # [frames, 16, 1 + 4 + 4]
    describe = F.binary_cross_entropy_with_logits(out[..., 0], shown.coverage)
    covered = shown.coverage > COVERED
    if covered.any():
        colour = shown.colour[:, None].expand_as(covered)[covered]
        column = COLUMN.expand_as(covered)[covered]
        describe = describe + F.cross_entropy(out[..., 1:5][covered], colour)
        describe = describe + F.cross_entropy(out[..., 5:9][covered], column)
    far = features[shown.far]
    spread = features.flatten(0, 1).var(0, unbiased=False).sum()
    local = far.var(0, unbiased=False).sum() / spread if len(far) > 1 else features.new_zeros(())
    return describe, local


def answer_loss(llava, examples: Examples, drawn: list[Example], visual) -> tuple[torch.Tensor, list[bool]]:
    """The mean cross-entropy of the answers' tokens and the end token after them (teacher-forced), and
    per example whether every one of them is the model's first choice."""
    lm = llava.model.model.language_model
    sequences, spans = [], []
    for example, features in zip(drawn, visual, strict=True):
        text = lm.embed_tokens(torch.tensor(examples.init + example.prompt + example.answer[:-1]))
        init, rest = text[: len(examples.init)], text[len(examples.init) :]
        sequences.append(torch.cat([init, features.flatten(0, 1), rest]))
        spans.append((len(sequences[-1]) - len(example.answer), example.answer))  # positions predicting it
    length = max(len(s) for s in sequences)
    embeds = torch.stack([F.pad(s, (0, 0, 0, length - len(s))) for s in sequences])
    mask = torch.stack([(torch.arange(length) < len(s)).long() for s in sequences])
    hidden = lm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    rows = torch.cat([torch.full((len(answer),), i) for i, (_, answer) in enumerate(spans)])
    at = torch.cat([torch.arange(start, start + len(answer)) for start, answer in spans])
    wanted = torch.tensor([token for _, answer in spans for token in answer])
    logits = llava.model.lm_head(hidden[rows, at])
    hits = (logits.argmax(-1) == wanted).split([len(answer) for _, answer in spans])
    return F.cross_entropy(logits, wanted), [bool(h.all()) for h in hits]


def step_losses(llava, examples: Examples, probe, size: int) -> tuple[dict[str, torch.Tensor], list]:
    """One batch's three losses, and ``(task, right)`` per example."""
    drawn = [examples.draw() for _ in range(size)]
    features = llava.frame_features(torch.cat([e.frames for e in drawn]))
    shown = Tokens.cat([e.tokens for e in drawn])
    describe, local = token_losses(features, shown, probe)
    split = [len(e.frames) for e in drawn]
    visual = [
        examples.thin(f, c) for f, c in zip(features.split(split), shown.coverage.split(split), strict=True)
    ]
    answer, rights = answer_loss(llava, examples, drawn, visual)
    return {"answer": answer, "describe": describe, "local": local}, [
        (e.task, right) for e, right in zip(drawn, rights, strict=True)
    ]


def report(step: int, args, losses: list[dict], rights: list, started: float) -> None:
    """One log line: the window's mean losses, and its share of right answers overall and per task."""
    means = ", ".join(f"{name} {sum(e[name] for e in losses) / len(losses):.4f}" for name in losses[0])
    tasks: dict[str, list[bool]] = {}
    for task, right in rights:
        tasks.setdefault(task, []).append(right)
    per_task = " ".join(f"{task} {100 * sum(r) / len(r):.0f}" for task, r in sorted(tasks.items()))
    overall = 100 * sum(right for _, right in rights) / len(rights)
    print(
        f"step {step}/{args.steps}: {means}; right {overall:.1f}% ({per_task}), "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    llava = llava_ov.build_random("demo", seed=args.seed)
    print(f"generating {args.clips} clips", flush=True)
    examples = Examples(
        llava, clips(args.clips, args.seed), random.Random(args.seed), args.drop, args.salient
    )
    model = llava.model.train()
    probe = torch.nn.Linear(llava.model.config.text_config.hidden_size, 1 + 4 + 4)  # not shipped
    parameters = [*model.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
        ),
    )
    weights = {"answer": 1.0, "describe": args.describe, "local": args.local}
    window_losses, window_rights = [], []
    for step in range(1, args.steps + 1):
        losses, rights = step_losses(llava, examples, probe, args.batch)
        loss = sum(weights[name] * value for name, value in losses.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        window_losses.append({name: value.item() for name, value in losses.items()})
        window_rights += rights
        if step % args.log_every == 0 or step == args.steps:
            report(step, args, window_losses, window_rights, started)
            window_losses, window_rights = [], []
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    llava_ov.save(llava, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips", type=positive, default=1500, help="training scenes (none is a demo clip)")
    parser.add_argument("--steps", type=positive, default=2000)
    parser.add_argument("--batch", type=positive, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--drop", type=share, default=0.7, help="share of examples with tokens dropped")
    parser.add_argument("--salient", type=share, default=0.5, help="share of those keeping the square first")
    parser.add_argument("--describe", type=float, default=1.0, help="weight of the probe's loss")
    parser.add_argument("--local", type=float, default=1.0, help="weight of the locality loss")
    parser.add_argument("--threads", type=positive, default=2)
    parser.add_argument("--log-every", type=positive, default=50)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
