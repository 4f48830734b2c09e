"""Which from-scratch recipe learns, and does it learn every time: a grid of recipes x seeds x corpora.

    python -m experiments.recipe_grid                                   # every recipe on the built-in corpus, 3 seeds
    python -m experiments.recipe_grid --corpora builtin tinystories --recipes preset modernbert --seeds 0 1 2
    python -m experiments.recipe_grid --corpora shakespeare --max-steps 300 --jobs 2

Each cell is one `train.py` run: the corpus's base flags (`CORPORA`), then the recipe's flags (`RECIPES`, on top of
the from-scratch preset that train.py applies), then `--seed S`. Runs already finished (their metrics.json exists)
are reused, so an interrupted grid continues where it stopped. Measured per run: the final evaluation's masked
loss (`eval_loss`, fixed mask levels) and ELBO bound (`eval_elbo`, nats per token), training seconds, and on the
built-in corpus the share of valid stories among `--num-samples` documents drawn at generate.py's defaults.
Writes recipe_grid.csv (one row per run), recipe_summary.csv (min / median / max over seeds per cell) and
recipe_grid.png into --output-dir.
"""

import json
import logging
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import tables, training_runs
from textdiffusion import cli
from textdiffusion.cli import UsageError

logger = logging.getLogger(__name__)

# Base flags per corpus. The real-text corpora are small runs (a tiny model, a few hundred steps): enough to tell a
# recipe that leaves the unigram plateau from one that does not, not a converged model.
REAL_TEXT = ["--from-scratch", "--model-size", "tiny", "--max-length", "128", "--vocab-size", "4000", "--batch-size", "32",
             "--max-steps", "300", "--eval-steps", "100000", "--save-steps", "100000", "--max-eval-samples", "200"]
CORPORA = {
    "builtin": ["--quick-test"],
    "tinystories": REAL_TEXT + ["--train-file", "{data}/tinystories.jsonl"],
    "shakespeare": REAL_TEXT + ["--train-file", "{data_dir}/tinyshakespeare/input.txt"],
    "wikitext2": REAL_TEXT + ["--train-file", "{data_dir}/wikitext-2-raw/wiki.valid.raw",
                              "--validation-file", "{data_dir}/wikitext-2-raw/wiki.test.raw"],
}

# Recipes: flags on top of the from-scratch preset. "preset" is the preset itself. Some recipes are the quick-test's
# own settings, so they change only the real-text runs; their opposites change only the built-in ones.
RECIPES = {
    "preset": [],
    "roberta": ["--architecture", "roberta"],
    "roberta-prelayernorm": ["--architecture", "roberta-prelayernorm"],
    "modernbert": ["--architecture", "modernbert"],
    "lr-1e-3": ["--learning-rate", "1e-3"],
    "lr-3e-3": ["--learning-rate", "3e-3"],
    "lr-5e-3": ["--learning-rate", "5e-3"],
    "warmup-200": ["--warmup-steps", "200"],
    "window-0.02-0.6": ["--min-mask-time", "0.02", "--max-mask-time", "0.6"],
    "bell": ["--time-sampling", "bell"],
    "curriculum-300": ["--mask-curriculum-steps", "300"],
    "elbo-weighting": ["--loss-weighting", "elbo"],
    "dropout-0.1": ["--dropout", "0.1"],
    "untied": ["--tie-word-embeddings", "false"],  # the quick-test's own setting
    "tied": ["--tie-word-embeddings", "true"],
    "batch-64": ["--batch-size", "64", "--max-steps", "600"],  # the same tokens in half the updates
    "repeat-mask-0.5": ["--repeat-mask-share", "0.5"],
    "copy-warm-up": ["--repeat-mask-steps", "150"],  # the quick-test's own setting
    "no-copy-warm-up": ["--repeat-mask-steps", "0"],
}


@dataclass
class GridArguments:
    corpora: list[str] = field(default_factory=lambda: ["builtin"], metadata={"help": f"Corpora: {', '.join(CORPORA)}."})
    recipes: list[str] = field(default_factory=lambda: list(RECIPES), metadata={"help": f"Recipes: {', '.join(RECIPES)}."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds of every cell."})
    max_steps: int | None = field(default=None, metadata={"help": "Training steps of every run. Default: the corpus's own."})
    extra: str = field(default="", metadata={"help": "More train.py flags for every run, e.g. '--max-train-samples 5000'."})
    num_samples: int = field(default=256, metadata={"help": "Built-in corpus: documents generated per run at generate.py's defaults."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the real-text corpora."})
    jobs: int = field(default=1, metadata={"help": "Runs trained at once (each with --threads torch threads)."})
    threads: int = field(default=1, metadata={"help": "torch threads per run (OMP_NUM_THREADS)."})
    output_dir: str = field(default="runs/recipe_grid", metadata={"help": "Runs, CSVs and the plot go here."})


def check_args(args) -> None:
    for name, given, known in (("--corpora", args.corpora, CORPORA), ("--recipes", args.recipes, RECIPES)):
        unknown = [g for g in given if g not in known]
        if unknown:
            raise UsageError(f"{name} {' '.join(unknown)}: unknown; choose from {', '.join(known)}")
    if any(seed < 0 for seed in args.seeds):
        raise UsageError(f"--seeds {args.seeds}: each must be 0 or more")
    if (args.max_steps is not None and args.max_steps < 1) or args.jobs < 1 or args.threads < 1 or args.num_samples < 1:
        raise UsageError("--max-steps, --jobs, --threads and --num-samples must be at least 1")
    real = [c for c in args.corpora if c != "builtin"]
    if real and not (Path(args.data_dir) / "tinyshakespeare").is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no tinyshakespeare/ there; point it at the shared corpora")


def tinystories_jsonl(args, out: Path) -> Path:
    """The TinyStories sample as one JSON document per story (the file separates them with <|endoftext|>)."""
    path = out / "data" / "tinystories.jsonl"
    if not path.is_file():
        source = Path(args.data_dir) / "tinystories" / "tinystories_sample_2MiB.txt"
        stories = [s.strip() for s in source.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"text": s}) + "\n" for s in stories[:-1]), encoding="utf-8")  # last one is cut
        tmp.rename(path)
    return path


def command(args, corpus: str, recipe: str, seed: int, data: Path) -> list[str]:
    """train.py's flags for one cell (the output directory is added by training_runs)."""
    flags = [f.format(data=data, data_dir=args.data_dir) for f in CORPORA[corpus]] + RECIPES[recipe]
    if args.max_steps:
        flags += ["--max-steps", str(args.max_steps)]
    return [*flags, *args.extra.split(), "--seed", str(seed), "--overwrite-output-dir", "--disable-tqdm", "true",
            "--save-strategy", "no"]


def run_cell(args, corpus: str, recipe: str, seed: int, out: Path) -> dict:
    """Train one run (unless finished before) and measure it; a failed run is a row marked failed."""
    row = {"corpus": corpus, "recipe": recipe, "seed": seed}
    try:
        return {**row, **training_runs.train_and_measure(
            command(args, corpus, recipe, seed, out / "data"), out / corpus / recipe / f"seed{seed}", args.threads,
            args.num_samples if corpus == "builtin" else 0,
        )}
    except UsageError as err:
        logger.error("%s / %s / seed %d: %s", corpus, recipe, seed, err)
        return {**row, "failed": True}


MEASURES = ("valid_rate", "well_formed_rate", "eval_elbo", "eval_loss", "train_seconds")


def summarise(rows: list[dict]) -> list[dict]:
    """Min / median / max over seeds of each measure, per (corpus, recipe)."""
    cells: dict = {}
    for row in rows:
        if not row.get("failed"):
            cells.setdefault((row["corpus"], row["recipe"]), []).append(row)
    summary = []
    for (corpus, recipe), runs in cells.items():
        entry = {"corpus": corpus, "recipe": recipe, "seeds": len(runs)}
        for measure in MEASURES:
            values = [r[measure] for r in runs if r.get(measure) is not None]
            if values:
                entry.update({f"{measure}_min": min(values), f"{measure}_median": statistics.median(values), f"{measure}_max": max(values)})
        summary.append(entry)
    return summary


PLOTTED = {  # measure: axis label
    "valid_rate": "valid stories (share of 256)",
    "well_formed_rate": "well-formed stories (share of 256)",
    "eval_elbo": "ELBO bound, nats/token (lower is better)",
}


def plot(rows: list[dict], path: Path) -> None:
    """One panel per (corpus, measure): a dot per seed, a bar at the median, one column per recipe."""
    plt = tables.pyplot()

    panels = [(corpus, measure) for corpus in dict.fromkeys(r["corpus"] for r in rows) for measure in PLOTTED
              if any(r.get(measure) is not None for r in rows if r["corpus"] == corpus)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (corpus, measure) in zip(axes[0], panels):
        runs = [r for r in rows if r["corpus"] == corpus and r.get(measure) is not None]
        recipes = list(dict.fromkeys(r["recipe"] for r in runs))
        for i, recipe in enumerate(recipes):
            values = [r[measure] for r in runs if r["recipe"] == recipe]
            ax.scatter([i] * len(values), values, color="tab:blue", s=18, zorder=3)
            ax.hlines(statistics.median(values), i - 0.3, i + 0.3, color="black")
        ax.set_xticks(range(len(recipes)), recipes, rotation=60, ha="right", fontsize=8)
        ax.set(title=corpus, ylabel=PLOTTED[measure])
        ax.grid(alpha=0.3)
    fig.suptitle("Recipe grid: one dot per seed, bar = median")
    tables.save_figure(fig, path, layout="tight")


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(GridArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    check_args(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "tinystories" in args.corpora:
        tinystories_jsonl(args, out)
    cells = [(c, r, s) for c in args.corpora for r in args.recipes for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda cell: run_cell(args, *cell, out), cells))
    columns = ["corpus", "recipe", "seed", *MEASURES, "broken_A", "broken_C", "broken_O", "failed"]
    tables.write_csv(out / "recipe_grid.csv", [{c: row.get(c) for c in columns} for row in rows], columns)
    summary = summarise(rows)
    if summary:
        tables.write_csv(out / "recipe_summary.csv", summary, list(dict.fromkeys(k for entry in summary for k in entry)))
        plot(rows, out / "recipe_grid.png")
    shown = ["corpus", "recipe", "seeds"] + [f"{m}_{s}" for m in MEASURES for s in ("min", "median", "max")]
    print(tables.markdown_table(summary, shown, lambda c, v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)))
    return rows


if __name__ == "__main__":
    cli.run(main)
