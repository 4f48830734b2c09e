"""Diffusion vs the matched GPT-2 over training length: the real-text benchmark at several step counts.

    python -m experiments.gap_over_steps --datasets shakespeare-char,warandpeace-char --steps 1000,2000 --threads 1
    python -m experiments.gap_over_steps              # all four corpora at 1000, 2000 and 5000 steps (hours on a CPU)

Each (dataset, steps) cell is one `python -m experiments.benchmark --dataset D --max-steps N --name N-steps` run
under --output-dir: both models are trained for N steps (so the cosine decay ends at N: each cell is its own
training), then measured on the held-out text. A cell whose benchmark.json was measured with the same settings is
read back, and the benchmark reuses a cell's checkpoints, so running the command again continues where it stopped.
Per cell: the diffusion ELBO bound perplexity and GPT-2's exact perplexity on the same held-out tokens, both in bits
per token (per character for the character-level corpora), their ratio, GPT-2's loss in nats (next to a published
reference where one exists: nanoGPT's 1.88 on shakespeare-char at 2000 steps), and the judge perplexity (under
the cell's GPT-2) and unigram entropy of --num-samples samples of each model (diffusion: threshold decoding) and of
as many held-out blocks. Writes gap_over_steps.csv and gap_over_steps.png (the ratio against steps, one line per
corpus) into --output-dir, and prints the table. The table holds the cells asked for and every cell an earlier
command measured under --output-dir with the same --seed and --num-samples, so cells measured one at a time (a
5000-step pair in the background, say) end up in one table and one plot.

A GPT-2 trained for many epochs of a small text overfits it: its held-out perplexity rises, and as the cell's
judge it scores held-out text as badly. So each cell is also set against the corpus's best GPT-2 (the cell whose
GPT-2 has the lowest held-out perplexity, the early-stopped baseline among the lengths measured): the bound over
its perplexity (`ratio_to_best_ar_*`, dashed in the plot) and every cell's samples and held-out text judged by it
(`*_judge_ppl_best_ar`). With --ar-max-steps N, GPT-2 is trained for at most N steps: a longer cell's diffusion
model is set against that shorter GPT-2 directly, and no hour goes into a GPT-2 that would overfit.
"""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import real_corpora, tables, training_runs
from textdiffusion import cli, models
from textdiffusion.cli import UsageError
from textdiffusion.data import tokenization
from textdiffusion.metrics import evaluation, likelihood

logger = logging.getLogger(__name__)


@dataclass
class GapArguments:
    datasets: str = field(
        default=",".join(real_corpora.DATASETS),
        metadata={"help": f"Comma-separated corpora of experiments/benchmark.py, from: {', '.join(real_corpora.DATASETS)}."},
    )
    steps: str = field(default="1000,2000,5000", metadata={"help": "Comma-separated training lengths (both models)."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the corpora (benchmark --data-dir)."})
    output_dir: str = field(
        default="runs/gap", metadata={"help": "The runs (<dataset>/<steps>-steps/, GPT-2 folders), the CSV and the plot."}
    )
    num_samples: int = field(default=64, metadata={"help": "Samples per model (and held-out blocks) for judge perplexity and entropy."})
    remeasure: bool = field(default=False, metadata={"help": "Measure every cell again (its checkpoints are still reused)."})
    threads: int | None = field(default=None, metadata={"help": "torch threads of each benchmark run, training included."})
    parallel_training: bool = field(
        default=False, metadata={"help": "Train each cell's two models at the same time (benchmark --parallel-training)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every run."})
    ar_max_steps: int | None = field(
        default=None, metadata={"help": "GPT-2 trains for at most this many steps: a longer cell sets its diffusion model against "
                                "this shorter GPT-2 (benchmark --ar-steps), the early-stopped baseline, and skips training one that overfits."}
    )


def parse_list(flag: str, text: str, allowed=None) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"--{flag} is empty; give a comma-separated list")
    for item in items:
        if allowed is not None and item not in allowed:
            raise UsageError(f"--{flag}: {item!r} is not one of {', '.join(allowed)}")
    return items


def parse_steps(text: str) -> list[int]:
    steps = parse_list("steps", text)
    if not all(s.isdigit() and int(s) >= 1 for s in steps):
        raise UsageError(f"--steps {text}: expected positive whole numbers such as 1000,2000,5000")
    return sorted({int(s) for s in steps})


def benchmark_argv(args, dataset: str, steps: int) -> list[str]:
    """The benchmark's flags for one cell; the rest (blocks, batch, tokenizer...) are the dataset's defaults."""
    argv = ["--dataset", dataset, "--max-steps", str(steps), "--name", f"{steps}-steps",
            "--data-dir", str(Path(args.data_dir).resolve()), "--output-root", str(Path(args.output_dir).resolve()),
            "--num-samples", str(args.num_samples), "--latency-repeats", "1", "--seed", str(args.seed)]
    argv += ["--parallel-training"] if args.parallel_training else []
    argv += ["--ar-steps", str(ar_steps(args, steps))] if ar_steps(args, steps) else []
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def ar_steps(args, steps: int) -> int | None:
    """GPT-2's steps in a cell of `steps`, when --ar-max-steps shortens them (None: the cell's own)."""
    return args.ar_max_steps if args.ar_max_steps and steps > args.ar_max_steps else None


def measured_with_these_settings(args, dataset: str, steps: int, saved: dict) -> bool:
    wanted = {"dataset": dataset, "max_steps": steps, "num_samples": args.num_samples, "seed": args.seed,
              "ar_steps": ar_steps(args, steps)}
    return all(saved["arguments"].get(key) == value for key, value in wanted.items())


def measured(args, dataset: str, steps: int) -> dict:
    """The cell's benchmark.json, read back when it was measured with these settings, else measured now."""
    folder = Path(args.output_dir) / dataset / f"{steps}-steps"
    path = folder / "benchmark.json"
    if path.is_file() and not args.remeasure:
        saved = json.loads(path.read_text())
        if measured_with_these_settings(args, dataset, steps, saved):
            logger.info("reusing %s", path)
            return saved
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "benchmark.log"
    logger.info("%s, %d steps: benchmark, log in %s", dataset, steps, log_path)
    code = training_runs.run_benchmark(benchmark_argv(args, dataset, steps), log_path, args.threads)
    if code != 0:
        raise training_runs.benchmark_failure(log_path, f"{dataset} at {steps} steps", code)
    return json.loads(path.read_text())


def recorded_cells(args) -> list[tuple[str, int]]:
    """Every (dataset, steps) cell under --output-dir that an earlier command measured with this seed and sample count."""
    cells = []
    for path in Path(args.output_dir).glob("*/*-steps/benchmark.json"):
        dataset, steps = path.parent.parent.name, path.parent.name.removesuffix("-steps")
        if dataset not in real_corpora.DATASETS or not steps.isdigit():
            continue
        if measured_with_these_settings(args, dataset, int(steps), json.loads(path.read_text())):
            cells.append((dataset, int(steps)))
    return cells


def gap_row(dataset: str, steps: int, result: dict) -> dict:
    """One cell of the table from a benchmark.json."""
    rows = result["rows"]  # threshold sampler, fixed-step sampler, GPT-2, (more samplers,) held-out text
    threshold, fixed, ar, held_out = rows[0], rows[1], rows[2], rows[-1]
    bound_bits, ar_bits = threshold["nats_per_token"] / math.log(2), ar["nats_per_token"] / math.log(2)
    return {
        "dataset": dataset,
        "steps": steps,
        "ar_steps": training_runs.ar_training_steps({"max_steps": steps, **result["arguments"]}),
        "unit": "char" if result["arguments"]["tokenizer_type"] == "char" else "token",
        "bound_ppl": threshold["ppl"],
        "ar_ppl": ar["ppl"],
        "ratio_ppl": result["summary"]["bound_over_ar_ppl"],
        "bound_bits": bound_bits,
        "ar_bits": ar_bits,
        "ratio_bits": result["summary"]["bound_over_ar_nats"],  # the same ratio in bits or nats
        "ar_nats": ar["nats_per_token"],
        "reference_ar_nats": real_corpora.DATASETS[dataset].reference.get(steps),
        "diffusion_judge_ppl": threshold["gen_ppl"],
        "ar_judge_ppl": ar["gen_ppl"],
        "held_out_judge_ppl": held_out["gen_ppl"],
        "diffusion_entropy": threshold["entropy"],
        "ar_entropy": ar["entropy"],
        "held_out_entropy": held_out["entropy"],
        "fixed_sampler": fixed["model"],  # diffusion at a quarter of a pass per token (adaptive: generate.py's default here)
        "fixed_judge_ppl": fixed["gen_ppl"],
        "fixed_entropy": fixed["entropy"],
        "diffusion_train_s": result["train_seconds"]["diffusion"],  # NaN where an earlier run's checkpoint was reused
        "ar_train_s": result["train_seconds"]["ar"],
    }


def best_ar(results: dict, dataset: str) -> int:
    """The step count of the corpus's cell whose GPT-2 has the lowest held-out perplexity."""
    return min((n for d, n in results if d == dataset), key=lambda n: results[dataset, n]["rows"][2]["ppl"])


def fixed_judge_row(args, dataset: str, steps: int, result: dict, judge_steps: int, judge) -> dict:
    """The cell against the corpus's best GPT-2: its bound over that GPT-2's perplexity, and the samples judged by it
    (a GPT-2 trained past its best judges held-out text as badly as it predicts it, so its own cell's judge can mislead)."""
    folder = Path(args.output_dir) / dataset / f"{steps}-steps"
    threshold, fixed, ar = result["rows"][0], result["rows"][1], result["rows"][2]
    tokenizer = tokenization.load_tokenizer(str(folder / "diffusion" / "final-model"))
    _, test_file = real_corpora.split_files(dataset, args.data_dir, folder)
    held_out = evaluation.held_out_texts(tokenizer, test_file, result["arguments"]["max_length"], args.num_samples)
    model, judge_tokenizer, best_ppl = judge
    return {
        "best_ar_steps": judge_steps,
        "best_ar_ppl": best_ppl,
        "ratio_to_best_ar_ppl": threshold["ppl"] / best_ppl,
        "ratio_to_best_ar_bits": threshold["nats_per_token"] / math.log(best_ppl),  # the same ratio in bits or nats
        "diffusion_judge_ppl_best_ar": likelihood.judge_perplexity(model, judge_tokenizer, threshold["samples"]).ppl,
        "fixed_judge_ppl_best_ar": likelihood.judge_perplexity(model, judge_tokenizer, fixed["samples"]).ppl,
        "ar_judge_ppl_best_ar": likelihood.judge_perplexity(model, judge_tokenizer, ar["samples"]).ppl,
        "held_out_judge_ppl_best_ar": likelihood.judge_perplexity(model, judge_tokenizer, held_out).ppl,
    }


COLUMNS = [
    "dataset", "steps", "ar_steps", "unit", "bound_ppl", "ar_ppl", "ratio_ppl", "bound_bits", "ar_bits", "ratio_bits", "ar_nats",
    "reference_ar_nats", "diffusion_judge_ppl", "ar_judge_ppl", "held_out_judge_ppl", "diffusion_entropy", "ar_entropy",
    "held_out_entropy", "fixed_sampler", "fixed_judge_ppl", "fixed_entropy", "best_ar_steps", "best_ar_ppl",
    "ratio_to_best_ar_ppl", "ratio_to_best_ar_bits", "diffusion_judge_ppl_best_ar", "fixed_judge_ppl_best_ar", "ar_judge_ppl_best_ar", "held_out_judge_ppl_best_ar", "diffusion_train_s", "ar_train_s",
]


def cell(column, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if column.endswith("_s") else f"{value:.3f}"
    return str(value)


def plot(rows: list[dict], path: Path) -> None:
    plt = tables.pyplot()

    steps = sorted({row["steps"] for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = ((axes[0], "ratio_ppl", "ratio_to_best_ar_ppl", "in perplexity"),
              (axes[1], "ratio_bits", "ratio_to_best_ar_bits", "in bits per token / char"))
    for ax, key, best_key, title in panels:
        for dataset in dict.fromkeys(row["dataset"] for row in rows):
            points = [(row["steps"], row[key]) for row in rows if row["dataset"] == dataset]
            (line,) = ax.plot(*zip(*points), marker="o", label=f"{dataset}: GPT-2 of the same steps")
            points = [(row["steps"], row[best_key]) for row in rows if row["dataset"] == dataset]
            ax.plot(*zip(*points), marker="x", linestyle="--", color=line.get_color(), label=f"{dataset}: its best GPT-2")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set(title=f"Diffusion bound / GPT-2, {title}", xlabel="training steps (both models)", ylabel="bound / AR", xscale="log")
        ax.set_xticks(steps, [str(n) for n in steps], minor=False)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    tables.save_figure(fig, path, layout="tight")


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(GapArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    datasets = parse_list("datasets", args.datasets, real_corpora.DATASETS)
    steps = parse_steps(args.steps)
    if args.num_samples < 1:
        raise UsageError(f"--num-samples {args.num_samples} must be at least 1")
    for dataset in datasets:
        real_corpora.source_files(dataset, args.data_dir)  # a missing corpus stops the command before any training
    results = {(dataset, n): measured(args, dataset, n) for dataset in datasets for n in steps}
    for recorded in recorded_cells(args):  # the table keeps the cells earlier commands measured with these settings
        if recorded not in results:
            results[recorded] = measured(args, *recorded)
    order = list(real_corpora.DATASETS)
    rows = []
    for dataset in sorted({d for d, _ in results}, key=order.index):
        judge_cell = best_ar(results, dataset)
        judge_steps = training_runs.ar_training_steps(results[dataset, judge_cell]["arguments"])  # that GPT-2's own steps
        model, tokenizer = models.load_causal_lm(str(training_runs.ar_run_folder(args.output_dir, results[dataset, judge_cell]["arguments"]) / "final-model"))
        judge = (model.eval(), tokenizer, results[dataset, judge_cell]["rows"][2]["ppl"])
        for n in sorted(n for d, n in results if d == dataset):
            rows.append({**gap_row(dataset, n, results[dataset, n]),
                         **fixed_judge_row(args, dataset, n, results[dataset, n], judge_steps, judge)})
    out = Path(args.output_dir)
    tables.write_csv(out / "gap_over_steps.csv", rows, COLUMNS)
    plot(rows, out / "gap_over_steps.png")
    print(tables.markdown_table(rows, COLUMNS, cell))
    return rows


if __name__ == "__main__":
    cli.run(main)
