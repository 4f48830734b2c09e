"""Does `python train.py --quick-test` learn every time? Train it with several seeds and sample each model.

    python -m experiments.quick_test_seeds                      # seeds 42 (the default) and 0-6, one after the other, all cores each
    python -m experiments.quick_test_seeds --seeds 5 6 --threads 1
    python -m experiments.quick_test_seeds --objective ar --seeds 0 1 2   # the matched GPT-2, same preset and data
    python -m experiments.quick_test_seeds --train-flags "--max-length 56" --output-dir runs/qt_l56   # a preset change
    python -m experiments.quick_test_seeds --seeds 3 4 --sample-seeds 1 2 3 4 5 6   # how much of a figure is the draw

Each seed runs exactly the README's command, `train.py --quick-test --seed S` (into --output-dir/seedS), timed
from start to exit, then 256 documents are drawn at generate.py's defaults and checked with the built-in
corpus's checker, and 256 more from the model's own distribution (one random position per pass; see
text_metrics.checkpoint_story_quality): valid and well-formed shares, and how far the sentence-count mix is from
the corpus's (shape_distance: a sampler that writes only the likeliest shapes is valid but not diverse). Writes
quick_test_seeds.csv and prints one row per seed plus min / median / max.
With --sample-seeds, each model also draws --num-samples documents at generate.py's defaults once per sampling
seed: the spread of its valid share over those draws tells a model's rate from the luck of one draw.
Runs already finished are reused (training_runs; delete the folder to train again, or give --resample to draw
their samples again after a sampler change).
"""

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import tables, training_runs
from textdiffusion import cli, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus
from textdiffusion.metrics import text_metrics

logger = logging.getLogger(__name__)


@dataclass
class SeedArguments:
    seeds: list[int] = field(default_factory=lambda: [42, 0, 1, 2, 3, 4, 5, 6], metadata={"help": "Seeds of train.py --quick-test (42: its default)."})
    num_samples: int = field(default=256, metadata={"help": "Documents drawn from each model at generate.py's defaults."})
    threads: int | None = field(default=None, metadata={"help": "torch threads for training and sampling. Default: torch's own (all cores)."})
    objective: str = field(default="diffusion", metadata={"choices": ("diffusion", "ar"), "help": "train.py --objective: the diffusion model or the matched GPT-2 (sampled by the shared autoregressive sampler)."})
    train_flags: str = field(default="", metadata={"help": "More train.py flags after --quick-test --seed S (e.g. \"--max-length 56\"), to measure a change of the preset."})
    sample_seeds: list[int] = field(default_factory=list, metadata={"help": "Also draw --num-samples documents at generate.py's defaults with each of these sampling seeds (generate.py --seed) and report each valid share and their mean."})
    resample: bool = field(default=False, metadata={"help": "Draw and check the samples of finished runs again (after a sampler change); no training."})
    output_dir: str = field(default="runs/quick_test_seeds", metadata={"help": "One folder per seed, and the CSV (--objective ar: a sub-folder ar/)."})


def run_seed(args, seed: int, out: Path) -> dict:
    flags = ["--quick-test", "--seed", str(seed)] + (["--objective", "ar"] if args.objective == "ar" else []) + shlex.split(args.train_flags)
    return {"seed": seed, **training_runs.train_and_measure(flags, out / f"seed{seed}", args.threads, args.num_samples, args.resample)}


def valid_over_sample_seeds(directory: Path, seeds: list[int], num_samples: int) -> list[float]:
    """The valid share of `num_samples` documents at generate.py's defaults, once per sampling seed."""
    path = str(directory / "final-model")
    causal = models.is_causal_lm(path)
    model = models.load_causal_lm(path) if causal else models.load_checkpoint(path)
    rates = []
    for seed in seeds:
        settings = sampling.GenerationSettings(num_samples=num_samples, seed=seed)
        out = sampling.sample_autoregressive(*model, settings) if causal else sampling.generate(model, settings, progress=False)
        rates.append(sum(map(corpus.is_valid_story, out.texts)) / len(out.texts))
    return rates


def plot(rows: list[dict], num_samples: int, path: Path) -> None:
    """Each seed's valid share with its 95% interval, and the 0.8 line."""
    plt = tables.pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.2))
    labels = [str(row["seed"]) for row in rows]
    rates = [row["valid_rate"] for row in rows]
    bounds = [text_metrics.valid_interval(round(rate * num_samples), num_samples) for rate in rates]
    axis.errorbar(range(len(rows)), rates, yerr=[[r - lo for r, (lo, _) in zip(rates, bounds)], [hi - r for r, (_, hi) in zip(rates, bounds)]],
                  fmt="o", capsize=3, label=f"valid share of {num_samples} stories (95% interval)")
    axis.axhline(0.8, color="grey", linestyle="--", linewidth=1)
    axis.set_xticks(range(len(rows)), labels)
    axis.set_xlabel("train.py --quick-test --seed")
    axis.set_ylim(0, 1)
    axis.legend(loc="lower right", fontsize=8)
    tables.save_figure(figure, path)


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(SeedArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if not args.seeds or any(seed < 0 for seed in args.seeds):
        raise UsageError(f"--seeds {args.seeds}: give one or more seeds, each 0 or more")
    if args.num_samples < 1 or (args.threads is not None and args.threads < 1):
        raise UsageError("--num-samples and --threads must be at least 1")
    if any(seed < 0 for seed in args.sample_seeds):
        raise UsageError(f"--sample-seeds {args.sample_seeds}: each sampling seed must be 0 or more")
    out = Path(args.output_dir) / ("ar" if args.objective == "ar" else "")
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_seed(args, seed, out) for seed in args.seeds]
    for row in rows:
        if args.sample_seeds:
            rates = valid_over_sample_seeds(out / f"seed{row['seed']}", args.sample_seeds, args.num_samples)
            row["valid_over_sample_seeds"] = " ".join(f"{rate:.3f}" for rate in rates)
            row["valid_mean_over_sample_seeds"] = sum(rates) / len(rates)
    for row in rows:
        low, high = text_metrics.valid_interval(round(row["valid_rate"] * args.num_samples), args.num_samples)
        row["valid_interval"] = f"{low:.3f}-{high:.3f}"
    columns = ["seed", "train_seconds", "eval_loss", "eval_elbo", "valid_rate", "valid_interval", "well_formed_rate", "shape_distance", "opening_distance", "broken_A",
               "broken_B", "broken_C", "broken_O", "broken_P", "nfe", "ancestral_valid_rate", "ancestral_well_formed_rate", "ancestral_shape_distance",
               "ancestral_opening_distance"] + (["valid_over_sample_seeds", "valid_mean_over_sample_seeds"] if args.sample_seeds else [])
    tables.write_csv(out / "quick_test_seeds.csv", [{c: row.get(c) for c in columns} for row in rows], columns)
    print(tables.markdown_table(rows, columns, lambda c, v: f"{v:.3f}" if isinstance(v, float) else str(v)))
    plot(rows, args.num_samples, out / "quick_test_seeds.png")
    for measure in ("valid_rate", "shape_distance", "opening_distance", "ancestral_valid_rate", "train_seconds"):
        print(f"{measure}: {tables.spread(row[measure] for row in rows)}")
    return rows


if __name__ == "__main__":
    cli.run(main)
