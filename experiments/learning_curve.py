"""When does the long-range rule appear? One long quick-test run, its story validity measured at every checkpoint.

    python -m experiments.learning_curve                                    # diffusion, 6000 steps, every 1000
    python -m experiments.learning_curve --objective ar --max-steps 6000   # the matched GPT-2, same data and preset
    python -m experiments.learning_curve --seed 1 --threads 1 --extra "--architecture roberta"

The run is `train.py --quick-test --max-steps N --save-steps K` (the quick-test's own settings otherwise; the
learning-rate schedule spans the N steps, so checkpoint k is not the same model as a k-step run). Each saved
checkpoint-K (and the final model) is sampled at generate.py's defaults (the GPT-2 with the shared autoregressive
sampler, same settings) and checked with the built-in corpus's checker: valid and well-formed shares and which
rule the others break. Writes learning_curve.csv and learning_curve.png into --output-dir/<objective>-seedS.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import tables, training_runs
from textdiffusion import cli
from textdiffusion.cli import UsageError
from textdiffusion.metrics import text_metrics

logger = logging.getLogger(__name__)


@dataclass
class CurveArguments:
    objective: str = field(default="diffusion", metadata={"choices": ("diffusion", "ar"), "help": "train.py --objective."})
    max_steps: int = field(default=6000, metadata={"help": "Training steps of the one run."})
    every: int = field(default=1000, metadata={"help": "Steps between measured checkpoints."})
    seed: int = field(default=0, metadata={"help": "train.py --seed."})
    num_samples: int = field(default=256, metadata={"help": "Documents drawn at each checkpoint."})
    threads: int | None = field(default=None, metadata={"help": "torch threads for training and sampling. Default: all cores."})
    extra: str = field(default="", metadata={"help": "More train.py flags, e.g. '--architecture roberta'."})
    output_dir: str = field(default="runs/learning_curve", metadata={"help": "One folder per (objective, seed)."})


def measure(run: Path, args) -> list[dict]:
    """One row per saved checkpoint, in step order, and the final model (cached in curve_rows.json)."""
    cached = run / "curve_rows.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    steps = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))
    rows = []
    for step in steps:
        quality = text_metrics.checkpoint_story_quality(str(run / f"checkpoint-{step}"), args.num_samples, threads=args.threads)
        rows.append({"step": step, **quality})
        logger.info("step %d: valid %.3f, well-formed %.3f", step, quality["valid_rate"], quality["well_formed_rate"])
    cached.write_text(json.dumps(rows))
    return rows


def plot(path: Path, rows: list[dict], title: str) -> None:
    plt = tables.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = [r["step"] for r in rows]
    for key, label in (("valid_rate", "valid"), ("well_formed_rate", "well-formed"), ("broken_A", "person differs"),
                       ("broken_B", "second person is the first"), ("broken_C", "colour differs"), ("broken_O", "object differs"),
                       ("broken_P", "place differs"),
                       ("ancestral_valid_rate", "valid, own distribution"), ("ancestral_well_formed_rate", "well-formed, own distribution")):
        if all(key in r for r in rows):
            ax.plot(steps, [r[key] for r in rows], marker="o", label=label, linestyle="--" if key.startswith("ancestral") else "-")
    ax.set(xlabel="training step", ylabel="share of the samples", title=title, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    tables.save_figure(fig, path, layout="tight")


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(CurveArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.max_steps < 1 or args.every < 1 or args.every > args.max_steps or args.num_samples < 1 or args.seed < 0:
        raise UsageError("--max-steps, --every and --num-samples must be at least 1, --every at most --max-steps, --seed 0 or more")
    run = Path(args.output_dir) / f"{args.objective}-seed{args.seed}"
    flags = ["--quick-test", "--seed", str(args.seed), "--objective", args.objective, "--max-steps", str(args.max_steps),
             "--save-steps", str(args.every), "--eval-steps", str(args.every), "--save-total-limit", str(args.max_steps // args.every + 1),
             *args.extra.split()]
    training_runs.train_and_measure(flags, run, args.threads)
    rows = measure(run, args)
    tables.write_csv(run / "learning_curve.csv", rows)
    plot(run / "learning_curve.png", rows, f"{args.objective}, seed {args.seed}: built-in stories over training")
    columns = ["step", "valid_rate", "well_formed_rate", "opening_distance", "broken_A", "broken_B", "broken_C", "broken_O",
               "broken_P", "nfe", "ancestral_valid_rate", "ancestral_well_formed_rate"]
    print(tables.markdown_table(rows, [c for c in columns if all(c in r for r in rows)],
                                lambda c, v: f"{v:.3f}" if isinstance(v, float) else str(v)))
    return rows


if __name__ == "__main__":
    cli.run(main)
