"""Sampling speed: samples/second and forward passes of `sampling.sample` per strategy, against a naive loop.

    python -m experiments.bench_sampling                                  # tiny from-scratch model, 128 tokens
    python -m experiments.bench_sampling --checkpoint results/final-model --length 48
    python -m experiments.bench_sampling --threads 1                       # a shared or busy CPU

The reference is the seed project's loop, re-implemented here: batch 1, and at every step a Python loop over the
masked positions, each drawn with its own softmax / top-k / multinomial. It takes the same number of steps, so
the difference is what batching and vectorising buy. `model_only_s` is the time of the same number of bare
forward passes at that batch size: no sampler can be faster, and `ceiling` is the speed-up over the naive
loop that such a free sampler would reach on this machine. Writes bench_sampling.csv into --output-dir.
"""

import logging
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from experiments.helpers import sampling_models, tables
from textdiffusion import blocks, cli, masking, models, sampling

logger = logging.getLogger(__name__)


@dataclass
class BenchArguments:
    checkpoint: str | None = field(default=None, metadata={"help": "Masked-LM checkpoint to time. Default: a tiny random model built from a config (the from-scratch default architecture)."})
    vocab_text: str | None = field(default=None, metadata={"help": "Without --checkpoint: train the tiny model's BPE tokenizer on this text file (e.g. ../shared/data/tinyshakespeare/input.txt) instead of the built-in stories, for a realistic vocabulary."})
    vocab_size: int = field(default=1000, metadata={"help": "Without --checkpoint: the tokenizer's vocabulary size (the LM head's width)."})
    length: int = field(default=128, metadata={"help": "Tokens per sample (all generated except the start token)."})
    steps: int | None = field(default=None, metadata={"help": "Denoising steps for both loops. Default: length // 4."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16], metadata={"help": "Batch sizes for sampling.sample."})
    strategies: list[str] = field(default_factory=lambda: list(sampling.STRATEGIES), metadata={"help": "Strategies to time."})
    schedule: str = field(default="cosine", metadata={"help": "Noise schedule of both loops."})
    sampling: str = field(default="topk", metadata={"help": "greedy, topk or nucleus, for both loops."})
    top_k: int = field(default=50, metadata={"help": "k for topk."})
    top_p: float = field(default=0.9, metadata={"help": "p for nucleus."})
    threshold: float = field(default=0.9, metadata={"help": "Confidence threshold of the threshold strategy."})
    repeats: int = field(default=3, metadata={"help": "Timed runs per setting (the median is reported), after one warm-up run."})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads (1 is faster on a busy CPU). Default: torch's choice."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda ... Default: cuda when available."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    output_dir: str = field(default="results/bench_sampling", metadata={"help": "Where bench_sampling.csv is written."})


# ----------------------------------------------------------------------------- the naive reference loop


def naive_sample(model, input_ids, mask_id, config: sampling.SamplerConfig, banned, generator):
    """The seed project's loop: batch 1, one position at a time in Python. Returns (ids, nfe)."""
    ids = input_ids.clone()  # (1, seq)
    span = int((ids == mask_id).sum())
    banned = torch.tensor(sorted(set(banned) | {mask_id}), device=ids.device)
    nfe = 0
    for step in range(1, config.steps + 1):
        masked = (ids[0] == mask_id).nonzero().flatten().tolist()
        if config.strategy in ("threshold", "adaptive") and not masked:
            break
        logits = model(input_ids=ids).logits[0].float()  # (seq, vocab)
        nfe += 1
        proposals = {}
        for pos in masked:
            row = logits[pos].clone()
            row[banned] = float("-inf")
            proposals[pos] = _draw_one(row, config, generator)
        t_next = torch.tensor(1.0 - step / config.steps, dtype=torch.float64)
        keep = int(torch.round(masking.mask_fraction(config.schedule, t_next) * span))
        if config.strategy == "remask":
            for pos in masked:
                ids[0, pos] = proposals[pos][0]
            generated = (input_ids[0] == mask_id).nonzero().flatten()
            hide = generated[torch.randperm(len(generated), generator=generator, device=generator.device)[:keep].to(ids.device)]
            ids[0, hide] = mask_id
            continue
        if config.strategy == "threshold":
            best = max(masked, key=lambda p: proposals[p][1])
            chosen = [p for p in masked if proposals[p][1] >= config.threshold or p == best]
            if step == config.steps:
                chosen = masked
        elif config.strategy == "random":
            order = torch.randperm(len(masked), generator=generator, device=generator.device).tolist()
            chosen = [masked[i] for i in order[: max(len(masked) - keep, 0)]]
        elif config.strategy == "adaptive":
            chosen = [p for p in masked if proposals[p][1] >= config.threshold]
            rest = [p for p in masked if p not in chosen]
            order = torch.randperm(len(rest), generator=generator, device=generator.device).tolist()
            chosen += [rest[i] for i in order[: max(len(masked) - keep - len(chosen), int(not chosen))]]
        else:
            chosen = sorted(masked, key=lambda p: -proposals[p][1])[: max(len(masked) - keep, 0)]
        for pos in chosen:
            ids[0, pos] = proposals[pos][0]
    return ids, nfe


def _draw_one(row, config, generator):
    """(token, confidence) for one position's logits (vocab,)."""
    if config.sampling == "greedy":
        probs = torch.softmax(row.double(), -1)
        confidence, token = probs.max(-1)
        return int(token), float(confidence)
    row = row.double() / config.temperature
    if config.sampling == "topk":
        values, index = torch.topk(row, min(config.top_k, row.numel()))
    else:
        values, index = torch.sort(row, descending=True)
        probs = torch.softmax(values, -1)
        keep = (probs.cumsum(-1) - probs) < config.top_p
        values, index = values[keep], index[keep]
    probs = torch.softmax(values, -1)
    choice = torch.multinomial(probs.to(generator.device), 1, generator=generator).item()
    return int(index[choice]), float(probs[choice])


# ----------------------------------------------------------------------------- timing


def timed(fn, repeats: int, device) -> tuple[float, object]:
    """Median seconds of `repeats` calls after one warm-up call, and the last result."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(args) -> list[dict]:
    model, tokenizer, banned, block_size = sampling_models.build(args.checkpoint, args.length, args.vocab_size, args.vocab_text, args.device)
    device = next(model.parameters()).device
    # A block-diffusion checkpoint samples block by block over its key/value cache; the naive loop stays the seed's.
    sampler_model = blocks.BlockModel(model, block_size) if block_size else model
    steps = args.steps or max(1, args.length // 4)
    mask_id = tokenizer.mask_token_id
    model_only = {}  # batch -> seconds of `steps` bare forward passes: the most any sampler could reach
    for batch in sorted({1, *args.batch_sizes}):
        inputs = sampling.build_inputs(tokenizer, "", args.length, batch).to(device)
        with torch.no_grad():
            model_only[batch], _ = timed(lambda: [model(input_ids=inputs) for _ in range(steps)], args.repeats, device)
    rows = []
    for strategy in args.strategies:
        config = sampling.SamplerConfig(
            steps=steps, schedule=args.schedule, strategy=strategy, sampling=args.sampling, top_k=args.top_k,
            top_p=args.top_p, threshold=args.threshold,
        )
        generator = torch.Generator(device=device).manual_seed(args.seed)
        one = sampling.build_inputs(tokenizer, "", args.length, 1).to(device)
        with torch.no_grad():
            seconds, (_, nfe) = timed(lambda: naive_sample(model, one, mask_id, config, banned, generator), args.repeats, device)
        naive = 1 / seconds
        rows.append(dict(
            loop="naive (seed)", strategy=strategy, batch=1, steps=steps, nfe=nfe, seconds=seconds,
            model_only_s=model_only[1], samples_per_s=naive, speedup=1.0, ceiling=seconds / model_only[1],
        ))
        for batch in args.batch_sizes:
            inputs = sampling.build_inputs(tokenizer, "", args.length, batch)
            seconds, result = timed(
                lambda: sampling.sample(sampler_model, inputs, mask_id, config, banned, generator), args.repeats, device
            )
            assert not (result.ids == mask_id).any()
            full = replace(config, sparse_logits=False)  # before: the LM head at every position of every pass
            full_seconds, _ = timed(lambda: sampling.sample(sampler_model, inputs, mask_id, full, banned, generator), args.repeats, device)
            rows.append(dict(
                loop="sampling.sample" + (f", blocks of {block_size}, cached" if block_size else ""), strategy=strategy,
                batch=batch, steps=steps, nfe=result.nfe, seconds=seconds,
                ms_per_pass=1000 * seconds / result.nfe, full_head_ms_per_pass=1000 * full_seconds / result.nfe,
                model_only_s=model_only[batch], samples_per_s=batch / seconds, speedup=batch / seconds / naive,
                # The speed-up of a sampler that cost nothing but its forward passes: no sampler can beat it here.
                ceiling=batch / model_only[batch] / naive,
            ))
        logger.info("%s done", strategy)
    return rows


COLUMNS = ["loop", "strategy", "batch", "steps", "nfe", "seconds", "ms_per_pass", "full_head_ms_per_pass", "model_only_s",
           "samples_per_s", "speedup", "ceiling"]


def markdown(rows: list[dict]) -> str:
    seconds = lambda column, value: f"{value:.3f}" if column in ("seconds", "model_only_s") else f"{value:.2f}" if isinstance(value, float) else str(value)
    return tables.markdown_table(rows, COLUMNS, seconds)


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(BenchArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "bench_sampling.csv", rows, COLUMNS)
    device = models.pick_device(args.device)
    print(f"{args.checkpoint or f'tiny random model, vocabulary {args.vocab_size}'}, {args.length} tokens, {args.schedule}, {args.sampling}, "
          f"device {device}, {torch.get_num_threads()} threads")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    cli.run(main)
