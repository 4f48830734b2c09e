"""Do train.py's from-scratch defaults learn a user's own text? Every shared corpus, several seeds, nothing but
the user's command.

    python -m experiments.defaults_table                                  # every corpus, seeds 42 0 1 (reads ../shared/data)
    python -m experiments.defaults_table --corpora shakespeare --seeds 42 --threads 1

Each cell runs exactly `train.py --from-scratch --train-file TRAIN --validation-file HELD_OUT --max-steps 1500
--seed S` (plus the corpus's layout flag: `--line-by-line` for one sentence per line, `--tokenizer-type char` for
characters) and the same with `--objective ar`, the matched GPT-2 of the same defaults; no other flag, so the
table measures the defaults a user gets. Both keep their checkpoint with the lowest held-out loss (train.py's
default). Reported per corpus, min / median / max over the seeds: the diffusion model's held-out loss at mask
rate 0.1 and at 1.0 and their ratio (a model that reads its context is well below 1; at the unigram plateau it is
about 1), then both saved models measured again on the whole held-out file: the diffusion model's perplexity bound
(likelihood.elbo_bound, --num-t-samples stratified times per block, with its Monte Carlo standard error) and the
GPT-2's exact perplexity, both per document token, and bound / GPT-2. Writes defaults_table.csv, .md and .png into
--output-dir; finished cells are reused (their held-out figures are measured once, into held_out.json).
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.helpers import real_corpora, tables, training_runs
from textdiffusion import cli, models
from textdiffusion.data import documents
from textdiffusion.metrics import evaluation, likelihood

logger = logging.getLogger(__name__)

# The corpora of the table and how a user would give each: the layout flag that fits its text.
LAYOUTS = {
    "shakespeare": [],
    "wikitext2": [],
    "tinystories": [],
    "simple": ["--line-by-line"],
    "shakespeare-char": ["--tokenizer-type", "char"],
}


@dataclass
class DefaultsArguments:
    corpora: list[str] = field(default_factory=lambda: list(LAYOUTS), metadata={"help": f"Corpora: any of {', '.join(LAYOUTS)}."})
    seeds: list[int] = field(default_factory=lambda: [42, 0, 1], metadata={"help": "train.py --seed of each run (42: the default)."})
    max_steps: int = field(default=1500, metadata={"help": "train.py --max-steps, the budget a user gives."})
    objectives: list[str] = field(default_factory=lambda: ["diffusion", "ar"], metadata={"help": "Which models to train: diffusion, ar (the matched GPT-2) or both; the table needs both (two processes can share the work)."})
    threads: int | None = field(default=None, metadata={"help": "torch threads per run. Default: torch's own (all cores)."})
    num_t_samples: int = field(default=8, metadata={"help": "Times per held-out block for the diffusion model's bound."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the shared corpora."})
    output_dir: str = field(default="runs/defaults_table", metadata={"help": "One folder per corpus, objective and seed; the tables."})


def run_cell(args, corpus: str, objective: str, seed: int) -> dict:
    """One train.py run at the defaults; the figures its final (best) evaluation gives."""
    out = Path(args.output_dir)
    train, held_out = real_corpora.split_files(corpus, args.data_dir, out / corpus)
    flags = ["--from-scratch", "--train-file", str(train), "--validation-file", str(held_out), "--max-steps", str(args.max_steps),
             "--seed", str(seed), *LAYOUTS[corpus], *(["--objective", "ar"] if objective == "ar" else [])]
    directory = out / corpus / f"{objective}-seed{seed}"
    training_runs.train_and_measure(flags, directory, args.threads)
    metrics = json.loads((directory / "metrics.json").read_text())
    held = held_out_perplexity(directory, held_out, objective, args.num_t_samples, args.threads)
    if objective == "ar":
        return {"ar_ppl": held["ppl"], "ar_best_step": metrics.get("best_step")}
    low, full = metrics["eval_loss_mask_0.1"], metrics["eval_loss_mask_1.0"]
    return {"loss_0.1": low, "loss_1.0": full, "ratio": low / full, "bound_ppl": held["ppl"],
            "bound_nats_stderr": held.get("nats_per_token_stderr"), "best_step": metrics.get("best_step")}


def held_out_perplexity(directory: Path, held_out: Path, objective: str, num_t_samples: int, threads: int | None) -> dict:
    """The run's final-model on every block of the held-out file, laid out as it was trained: the bound (diffusion)
    or the exact perplexity (GPT-2), per document token; cached in held_out.json."""
    cached = directory / "held_out.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    if threads:
        torch.set_num_threads(threads)
    config = models.DiffusionConfig.load(directory / "final-model")
    if objective == "ar":
        model, tokenizer = models.load_causal_lm(str(directory / "final-model"))
    else:
        checkpoint = models.load_checkpoint(str(directory / "final-model"))
        model, tokenizer = checkpoint.model, checkpoint.tokenizer
    docs = documents.read_documents(str(held_out), config.line_by_line)
    rows = evaluation.evaluation_rows(tokenizer, docs, config.max_length, config.line_by_line)
    if objective == "ar":
        result = likelihood.causal_perplexity(model.eval(), tokenizer, rows, line_by_line=config.line_by_line)
    else:
        result = likelihood.elbo_bound(model, tokenizer, rows, config.schedule, config.line_by_line, num_t_samples,
                                       seed=0, block_size=config.block_size)
    figures = result.as_dict()
    cached.write_text(json.dumps(figures))
    return figures


def summary(corpus: str, rows: list[dict]) -> dict:
    """min / median / max over seeds of each figure, as one table row."""
    def cell(key):
        values = [row[key] for row in rows if row.get(key) is not None]
        return "/".join(f"{v:.3g}" for v in tables.min_median_max(values)) if values else "-"

    for row in rows:
        if "bound_ppl" in row and "ar_ppl" in row:
            row["bound_over_ar"] = row["bound_ppl"] / row["ar_ppl"]
    seeds = len(rows)
    return {"corpus": corpus, "seeds": seeds, **{key: cell(key) for key in ("loss_0.1", "loss_1.0", "ratio", "bound_ppl", "ar_ppl", "bound_over_ar")}}


def plot(by_corpus: dict, path: Path) -> None:
    plt = tables.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(by_corpus)
    for i, name in enumerate(names):
        rows = by_corpus[name]
        axes[0].scatter([i] * len(rows), [row.get("ratio", float("nan")) for row in rows], color="tab:blue")
        axes[1].scatter([i] * len(rows), [row.get("bound_over_ar", float("nan")) for row in rows], color="tab:orange")
    axes[0].axhline(0.8, color="grey", linestyle="--", linewidth=1)
    axes[0].set_title("loss at mask 0.1 / at 1.0 (below 0.8: reads context)")
    axes[1].axhline(1.5, color="grey", linestyle="--", linewidth=1)
    axes[1].set_title("bound perplexity / GPT-2 perplexity")
    for axis in axes:
        axis.set_xticks(range(len(names)), names, rotation=20)
    figure.tight_layout()
    tables.save_figure(figure, path)


def main(argv=None):
    (args,) = cli.parse(cli.parser_for((DefaultsArguments,), __doc__.splitlines()[0]), argv)
    cli.log_to_stderr()
    if not args.objectives or set(args.objectives) - {"diffusion", "ar"}:
        raise cli.UsageError(f"--objectives {' '.join(args.objectives)}: give diffusion, ar or both")
    unknown = [name for name in args.corpora if name not in LAYOUTS]
    if unknown:
        raise cli.UsageError(f"--corpora {unknown[0]} is unknown; choose any of {', '.join(LAYOUTS)}")
    out = Path(args.output_dir)
    by_corpus, rows = {}, []
    for corpus in args.corpora:
        by_corpus[corpus] = []
        for seed in args.seeds:
            row = {"corpus": corpus, "seed": seed}
            for objective in args.objectives:
                row.update(run_cell(args, corpus, objective, seed))
            by_corpus[corpus].append(row)
            rows.append(row)
            logger.info("%s seed %d: %s", corpus, seed, row)
    summaries = [summary(corpus, corpus_rows) for corpus, corpus_rows in by_corpus.items()]
    tables.write_csv(out / "defaults_table.csv", rows, list(dict.fromkeys(key for row in rows for key in row)))
    table = tables.markdown_table(summaries, ["corpus", "seeds", "loss_0.1", "loss_1.0", "ratio", "bound_ppl", "ar_ppl", "bound_over_ar"])
    (out / "defaults_table.md").write_text(table + "\n")
    plot(by_corpus, out / "defaults_table.png")
    print(table)
    return rows


if __name__ == "__main__":
    cli.run(main)
