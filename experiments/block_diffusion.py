"""Block diffusion against full masked diffusion and the matched GPT-2: the likelihood bound, sample quality and speed.

    python -m experiments.block_diffusion --threads 1                       # blocks 4, 8, 16 and full; seeds 0, 1, 2
    python -m experiments.block_diffusion --block-sizes 4 16 --seeds 0      # a part of it

Each (block size, seed) cell is one `python -m experiments.benchmark --dataset D --max-length L --block-size B --seed S
--name L<L>-b<B>-seed<S>` run (the full-sequence model: no --block-size, name L<L>-full-seed<S>): the diffusion model and
the matched GPT-2 are trained with the dataset's recipe and budget (real_corpora.py; shakespeare-char: nanoGPT's CPU
configuration, 2000 steps, here with 128-character blocks so that a sample is 128 tokens), then measured alone on the
machine. A cell whose benchmark.json exists is read back (delete it, or --remeasure, to measure again; the
checkpoints are reused either way). Per cell and sampler (threshold decoding; --fixed-strategy in each of --fixed-steps passes):
bound / GPT-2 in nats, the judge perplexity and unigram entropy of 16 samples against held-out text's, model passes
per generated token (a block model's first pass over a block also caches the block before it), and the batch-1 latency of one 128-token sample against
GPT-2 with its KV cache. Over seeds: min / median / max. Writes block_diffusion.csv (one row per cell and sampler)
and block_diffusion.png (bound / GPT-2 and speed-up against block size) into --output-dir, and prints the table.

Quality "at >= 0.9x GPT-2's" means: judge perplexity at most GPT-2's / 0.9 and entropy at least 0.9x GPT-2's.
"""

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import real_corpora, tables, training_runs
from textdiffusion import cli
from textdiffusion.cli import UsageError

logger = logging.getLogger(__name__)


@dataclass
class BlockArguments:
    block_sizes: list[int] = field(default_factory=lambda: [4, 8, 16], metadata={"help": "Block sizes; the full-sequence model is always added."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds of every cell."})
    dataset: str = field(default="shakespeare-char", metadata={"choices": tuple(real_corpora.DATASETS), "help": "The corpus."})
    max_length: int = field(default=128, metadata={"help": "Tokens per training row and per sample."})
    fixed_steps: list[int] = field(default_factory=lambda: [32, 64], metadata={"help": "Passes of the fixed-step samplers, one row each (benchmark --fixed-steps)."})
    fixed_strategy: str = field(default="confidence", metadata={"help": "Their strategy (benchmark --fixed-strategy): with few passes per block, the most certain positions first."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the corpora (benchmark --data-dir)."})
    output_root: str = field(default="runs/benchmark", metadata={"help": "Where the benchmark runs are (benchmark --output-root)."})
    output_dir: str = field(default="runs/block_diffusion", metadata={"help": "Where the CSV and the plot are written."})
    extra: str = field(default="", metadata={"help": "More benchmark flags for every cell, e.g. '--max-steps 500' (they are part of the cell's name)."})
    remeasure: bool = field(default=False, metadata={"help": "Measure every cell again (its checkpoints are still reused)."})
    threads: int | None = field(default=None, metadata={"help": "torch threads of each benchmark run, training included."})


def cell_name(args, block_size: int | None, seed: int) -> str:
    suffix = "-" + "_".join(args.extra.split()).lstrip("-") if args.extra else ""
    return f"L{args.max_length}-{'b' + str(block_size) if block_size else 'full'}{suffix}-seed{seed}"


def benchmark_argv(args, block_size: int | None, seed: int) -> list[str]:
    argv = ["--dataset", args.dataset, "--max-length", str(args.max_length), "--seed", str(seed),
            "--name", cell_name(args, block_size, seed), "--data-dir", str(Path(args.data_dir).resolve()),
            "--output-root", str(Path(args.output_root).resolve()), *args.extra.split()]
    argv += ["--block-size", str(block_size)] if block_size else []
    argv += ["--fixed-steps", *map(str, args.fixed_steps), "--fixed-strategy", args.fixed_strategy]
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def measured(args, block_size: int | None, seed: int) -> dict:
    """The cell's benchmark.json, measured now unless it exists."""
    folder = Path(args.output_root) / args.dataset / cell_name(args, block_size, seed)
    path = folder / "benchmark.json"
    if path.is_file() and not args.remeasure:
        logger.info("reusing %s", path)
        return json.loads(path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "benchmark.log"
    logger.info("blocks of %s, seed %d: benchmark, log in %s", block_size or "all", seed, log_path)
    code = training_runs.run_benchmark(benchmark_argv(args, block_size, seed), log_path, args.threads)
    if code != 0:
        raise training_runs.benchmark_failure(log_path, f"blocks of {block_size or 'all'}, seed {seed}", code)
    return json.loads(path.read_text())


def cell_rows(block_size: int | None, seed: int, result: dict) -> list[dict]:
    """One row per sampler of a cell's benchmark.json."""
    rows = result["rows"]
    ar, held_out = rows[2], rows[-1]
    generated = result["arguments"]["max_length"] - 1  # every position after the start token
    out = []
    for row in rows[:2] + rows[3:-1]:  # the diffusion samplers: threshold, then the fixed-step ones
        sampler = "threshold" if row is rows[0] else row["model"].removeprefix("diffusion, ")
        out.append({
            "block_size": block_size or result["arguments"]["max_length"],
            "full": block_size is None,
            "seed": seed,
            "sampler": sampler,
            "bound_over_ar": result["summary"]["bound_over_ar_nats"],
            "judge_ppl": row["gen_ppl"],
            "judge_over_held_out": row["gen_ppl"] / held_out["gen_ppl"],
            "entropy_over_held_out": row["entropy"] / held_out["entropy"],
            "ar_judge_over_held_out": ar["gen_ppl"] / held_out["gen_ppl"],
            "ar_entropy_over_held_out": ar["entropy"] / held_out["entropy"],
            "passes_per_token": row["batch1_passes"] / generated,
            "batch1_seconds": row["batch1_seconds"],
            "ar_batch1_seconds": ar["batch1_seconds"],
            "speedup_vs_ar": ar["batch1_seconds"] / row["batch1_seconds"],
            # GPT-2's quality, within 10%: judge perplexity at most its / 0.9, entropy at least 0.9x its
            "quality_ok": row["gen_ppl"] <= ar["gen_ppl"] / 0.9 and row["entropy"] >= 0.9 * ar["entropy"],
        })
    return out


SUMMARY = ["bound_over_ar", "judge_over_held_out", "entropy_over_held_out", "ar_judge_over_held_out", "passes_per_token",
           "speedup_vs_ar"]
COLUMNS = ["block_size", "full", "seed", "sampler", *SUMMARY, "ar_entropy_over_held_out", "judge_ppl", "batch1_seconds",
           "ar_batch1_seconds", "quality_ok"]


def summary(rows: list[dict]) -> list[dict]:
    """Per block size and sampler, min / median / max over seeds of each measure; how many seeds meet the speed goal."""
    out = []
    for key in dict.fromkeys((row["block_size"], row["sampler"]) for row in rows):
        group = [row for row in rows if (row["block_size"], row["sampler"]) == key]
        goal = sum(row["quality_ok"] and row["speedup_vs_ar"] >= 2 for row in group)
        out.append({"block": "full" if group[0]["full"] else key[0], "sampler": key[1], "seeds": len(group),
                    **{name: tables.spread(row[name] for row in group) for name in SUMMARY},
                    ">= 2x at >= 0.9x quality": f"{goal} of {len(group)}"})
    return out


def plot(rows: list[dict], path: Path) -> None:
    plt = tables.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted({row["block_size"] for row in rows})
    for ax, key, title, samplers in (
        (axes[0], "bound_over_ar", "Likelihood bound / GPT-2 (nats)", ["threshold"]),
        (axes[1], "speedup_vs_ar", "Batch-1 speed-up over cached GPT-2", list(dict.fromkeys(row["sampler"] for row in rows))),
    ):
        for sampler in samplers:
            points = [(row["block_size"], row[key]) for row in rows if row["sampler"] == sampler]
            if not points:
                continue
            ax.scatter(*zip(*points), s=14, alpha=0.6)
            medians = [statistics.median(v for b, v in points if b == size) for size in sizes]
            ax.plot(sizes, medians, marker="o", label=sampler if len(samplers) > 1 else "median over seeds")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set(title=title, xlabel="block size (the largest: the whole row, ordinary masked diffusion)", xscale="log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    tables.save_figure(fig, path, layout="tight")


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(BlockArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    for size in args.block_sizes:
        if not 1 <= size < args.max_length or args.max_length % size:
            raise UsageError(f"--block-sizes {size}: each must be at least 1, below --max-length {args.max_length} and divide it")
    if not args.seeds or any(seed < 0 for seed in args.seeds):
        raise UsageError(f"--seeds {args.seeds}: give one or more seeds, each 0 or more")
    real_corpora.source_files(args.dataset, args.data_dir)  # a missing corpus stops the command before any training
    rows = [row for size in [*sorted(set(args.block_sizes)), None] for seed in args.seeds
            for row in cell_rows(size, seed, measured(args, size, seed))]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "block_diffusion.csv", rows, COLUMNS)
    plot(rows, out / "block_diffusion.png")
    table = summary(rows)
    print(tables.markdown_table(table, list(table[0]), lambda column, value: str(value)))
    return rows


if __name__ == "__main__":
    cli.run(main)
