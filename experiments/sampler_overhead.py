"""What a generation costs beyond its forward passes: the sampler's time against the same passes run bare.

    python -m experiments.sampler_overhead --threads 1                       # tiny random model, 128 tokens
    python -m experiments.sampler_overhead --checkpoint results/final-model --length 48 --threads 1
    python -m experiments.sampler_overhead --block-sizes 0 16 --threads 1    # whole row, and semi-autoregressive blocks of 16

For each strategy, batch size and block setting: one generation records every call the sampler makes to the
model (the ids, the positions asked for, the attention mask; with a block model, in order over its key/value
cache); then the generation is timed, and so are those recorded calls replayed bare (the cache reset first, so
the replay does the same work on the same shapes). `ratio` is generation / passes: 1 would be a sampler that
costs nothing but its forward passes. Both are warmed up by one untimed generation; `first_s` is that first
generation, what a fresh process pays. The sampler's generator is re-seeded before every run, so every run is
the same generation. Writes sampler_overhead.csv into --output-dir.
"""

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.helpers import sampling_models, tables
from textdiffusion import blocks as block_models, cli, sampling
from textdiffusion.models.heads import Denoiser, as_denoiser

STRATEGIES = list(sampling.STRATEGIES)


@dataclass
class OverheadArguments:
    checkpoint: str | None = field(default=None, metadata={"help": "Masked-LM checkpoint. Default: a tiny random model (experiments.helpers.sampling_models)."})
    vocab_size: int = field(default=1000, metadata={"help": "Without --checkpoint: the tiny model's vocabulary size."})
    length: int = field(default=128, metadata={"help": "Tokens per sample."})
    steps: int | None = field(default=None, metadata={"help": "Denoising steps. Default: length // 4."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16], metadata={"help": "Batch sizes."})
    block_sizes: list[int] = field(default_factory=lambda: [0], metadata={"help": "Sampler blocks (--block-size of generate.py); 0: the whole row (a block model keeps its own)."})
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={"help": "Strategies to time."})
    repeats: int = field(default=5, metadata={"help": "Timed runs of each (the median is reported)."})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads. Default: torch's choice."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda ... Default: cuda when available."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler's generator."})
    output_dir: str = field(default="results/sampler_overhead", metadata={"help": "Where sampler_overhead.csv is written."})


class Recorder(Denoiser):
    """A denoiser that keeps a copy of every call's arguments while passing it on (the passes to replay)."""

    def __init__(self, inner: Denoiser):
        super().__init__(inner.model)
        self.inner, self.block_size, self.calls = inner, inner.block_size, []

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def reset(self) -> None:
        self.inner.reset()

    def logits_at(self, ids, where, attention_mask=None):
        self.calls.append((ids.clone(), where.clone(), None if attention_mask is None else attention_mask.clone()))
        return self.inner.logits_at(ids, where, attention_mask)


@torch.no_grad()
def replay(denoiser: Denoiser, calls) -> list[torch.Tensor]:
    """The recorded calls run bare, in order, over a fresh cache: the passes the generation needed."""
    denoiser.reset()
    return [denoiser.logits_at(ids, where, mask) for ids, where, mask in calls]


def seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(denoiser: Denoiser, tokenizer, banned, config, batch: int, length: int, repeats: int, seed: int) -> dict:
    device = denoiser.device
    inputs = sampling.build_inputs(tokenizer, "", length, batch).to(device)
    generator = torch.Generator(device=device)
    generate = lambda model: sampling.sample(model, inputs, tokenizer.mask_token_id, config, banned, generator.manual_seed(seed))  # noqa: E731
    first = seconds(lambda: generate(denoiser), 1, device)
    recorder = Recorder(denoiser)
    result = generate(recorder)
    # Alternated, each pair timed back to back, so that load from elsewhere falls on both alike.
    pairs = [(seconds(lambda: generate(denoiser), 1, device), seconds(lambda: replay(denoiser, recorder.calls), 1, device))
             for _ in range(repeats)]
    generation, passes = (statistics.median(times) for times in zip(*pairs))
    return {"passes": len(recorder.calls), "nfe": result.nfe, "first_s": first, "generation_s": generation, "passes_s": passes,
            "ratio": statistics.median(g / p for g, p in pairs), "ms_per_pass": 1000 * passes / len(recorder.calls)}


def check(args) -> None:
    if args.length < 2:
        raise cli.UsageError(f"--length {args.length} must be at least 2")
    for name, values, least in (("--batch-sizes", args.batch_sizes, 1), ("--block-sizes", args.block_sizes, 0)):
        if not values or min(values) < least:
            raise cli.UsageError(f"{name} {' '.join(map(str, values))}: each must be at least {least}")
    for name, value in (("--steps", args.steps), ("--repeats", args.repeats)):
        if value is not None and value < 1:
            raise cli.UsageError(f"{name} {value} must be at least 1")
    bad = [s for s in args.strategies if s not in sampling.STRATEGIES]
    if bad:
        raise cli.UsageError(f"--strategies {bad[0]!r}: choose from {', '.join(sampling.STRATEGIES)}")
    generated = args.length - 1
    uneven = [b for b in args.block_sizes if b and generated % b]
    if uneven:
        raise cli.UsageError(f"--block-sizes {uneven[0]} does not divide the {generated} generated positions of --length {args.length}")


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(OverheadArguments, argv, __doc__.splitlines()[0])
    check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, banned, block_size = sampling_models.build(args.checkpoint, args.length, args.vocab_size, device=args.device)
    steps = args.steps or max(1, args.length // 4)
    rows = []
    for strategy in args.strategies:
        for blocks in args.block_sizes:
            config = sampling.SamplerConfig(steps=steps, strategy=strategy, block_size=blocks or None)
            denoiser = block_models.BlockModel(model, block_size) if block_size else as_denoiser(model, config.sparse_logits)
            for batch in args.batch_sizes:
                row = {"strategy": strategy, "blocks": block_size or blocks or "row", "batch": batch, "steps": steps,
                       **measure(denoiser, tokenizer, banned, config, batch, args.length, args.repeats, args.seed)}
                print(f"{strategy}, blocks {row['blocks']}, batch {batch}: {row['ratio']:.3f}x its {row['passes']} passes")
                rows.append(row)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["strategy", "blocks", "batch", "steps", "passes", "nfe", "first_s", "generation_s", "passes_s", "ratio", "ms_per_pass"]
    tables.write_csv(out / "sampler_overhead.csv", rows, columns)
    print(tables.markdown_table(rows, columns, lambda c, v: f"{v:.4f}" if c.endswith("_s") else f"{v:.3f}" if isinstance(v, float) else str(v)))
    return rows


if __name__ == "__main__":
    cli.run(main)
