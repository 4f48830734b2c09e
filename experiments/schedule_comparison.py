"""Quality and time against sampler steps for every schedule x strategy.

    python -m experiments.schedule_comparison                     # results/final-model, judged by results-ar/final-model
    python -m experiments.schedule_comparison --checkpoint runs/dev-model --judge runs/dev-ar/final-model --steps 4 8

Each setting draws --num-samples documents with sampling.generate (the one sampling loop) and measures the share
`corpus.is_valid_story` accepts (a model of the built-in corpus only), the judge's perplexity of the samples (likelihood.judge_perplexity), the mean
unigram entropy per sample and the seconds taken. Writes schedule_comparison.png (one line per schedule x
strategy against steps) and schedule_comparison.csv into --output-dir.
"""

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from experiments.helpers import tables
from textdiffusion import cli, masking, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus
from textdiffusion.metrics import likelihood, text_metrics

logger = logging.getLogger(__name__)


@dataclass
class ComparisonArguments:
    checkpoint: str = field(default="results/final-model", metadata={"help": "Diffusion checkpoint (trained on the built-in corpus for the validity rate)."})
    judge: str = field(default="results-ar/final-model", metadata={"help": "Causal LM that scores the samples; 'none' or a missing default skips it."})
    schedules: list[str] = field(default_factory=lambda: list(masking.SCHEDULES), metadata={"help": "Schedules to compare."})
    strategies: list[str] = field(default_factory=lambda: list(sampling.STRATEGIES), metadata={"help": "Strategies to compare."})
    steps: list[int] = field(default_factory=lambda: [4, 8, 16], metadata={"help": "Sampler step counts."})
    num_samples: int = field(default=32, metadata={"help": "Documents per setting (one batch)."})
    seed: int = field(default=0, metadata={"help": "Random seed, the same for every setting."})
    threads: int | None = field(
        default=1, metadata={"help": "torch intra-op threads; a tiny model gains nothing from more, and they spin on a busy CPU."}
    )
    output_dir: str = field(default="results/experiments/schedule_comparison", metadata={"help": "Where the PNG and CSV are written."})


def load_judge(name: str):
    if name.lower() == "none" or (name == "results-ar/final-model" and not Path(name).is_dir()):
        logger.warning("no judge (%s): generative perplexity is left out", name)
        return None
    model, tokenizer = models.load_causal_lm(name)
    return model.eval(), tokenizer


def compare(args) -> list[dict]:
    for flag, values, table in (("--strategies", args.strategies, sampling.STRATEGIES), ("--schedules", args.schedules, masking.SCHEDULES)):
        for value in values:
            if value not in table:
                raise UsageError(f"{flag} {value!r} is unknown; choose from {', '.join(table)}")
    checkpoint = models.load_checkpoint(args.checkpoint)
    builtin = (checkpoint.diffusion_config.corpus or "builtin").startswith("builtin")
    judge = load_judge(args.judge)
    rows = []
    for schedule, strategy, steps in tqdm(list(itertools.product(args.schedules, args.strategies, args.steps)), desc="settings"):
        settings = sampling.GenerationSettings(
            max_length=checkpoint.max_length, num_samples=args.num_samples, steps=steps, schedule=schedule,
            strategy=strategy, seed=args.seed,
        )
        samples = sampling.generate(checkpoint, settings, progress=False)
        row = {"schedule": schedule, "strategy": strategy, "steps": steps, "forward_passes": samples.nfe,
               "seconds": samples.seconds, "entropy": text_metrics.mean_unigram_entropy(samples.texts)}
        if builtin:  # the story checker means nothing for a model of other text
            row["valid_rate"] = sum(map(corpus.is_valid_story, samples.texts)) / len(samples.texts)
        if judge is not None:
            row["gen_ppl"] = likelihood.judge_perplexity(*judge, samples.texts).ppl
        rows.append(row)
    return rows


def plot(path: Path, rows: list[dict], title: str) -> None:
    plt = tables.pyplot()
    panels = [("valid_rate", "valid stories (share)"), ("gen_ppl", "judge perplexity of samples"),
              ("entropy", "unigram entropy per sample (nats)"), ("seconds", "seconds per batch")]
    panels = [p for p in panels if p[0] in rows[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6))
    colours = {strategy: f"C{i}" for i, strategy in enumerate(sampling.STRATEGIES)}
    styles = {schedule: ["-", "--", ":", "-."][i % 4] for i, schedule in enumerate(masking.SCHEDULES)}
    for ax, (key, name) in zip(axes, panels):
        for (schedule, strategy), group in itertools.groupby(sorted(rows, key=lambda r: (r["schedule"], r["strategy"], r["steps"])),
                                                             key=lambda r: (r["schedule"], r["strategy"])):
            group = list(group)
            ax.plot([r["steps"] for r in group], [r[key] for r in group], styles[schedule], marker="o", markersize=3,
                    color=colours[strategy], label=f"{strategy} / {schedule}")
        ax.set(xlabel="sampler steps", title=name, xscale="log", xticks=sorted({r["steps"] for r in rows}))
        ax.set_xticklabels([str(s) for s in sorted({r["steps"] for r in rows})])
        ax.minorticks_off()
        if key == "gen_ppl":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.02, 0.5), title="strategy / schedule")
    fig.suptitle(title, fontsize=10)
    tables.save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(ComparisonArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = compare(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "schedule_comparison.csv", rows)
    plot(out / "schedule_comparison.png", rows, f"{args.checkpoint}, {args.num_samples} samples per setting, seed {args.seed}")
    print(tables.format_table([{"model": f"{r['strategy']} / {r['schedule']} / {r['steps']}", **r} for r in rows]))
    return rows


if __name__ == "__main__":
    cli.run(main)
