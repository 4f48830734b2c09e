"""What the masking collator does: one story masked at levels 0.1 ... 1.0, and each schedule's m(t).

    python -m experiments.masking_viz                         # a tokenizer trained on the built-in corpus
    python -m experiments.masking_viz --checkpoint results/final-model

The top panel is the collator's real output (data_collator.DiffusionCollator at fixed times, linear schedule so
the level equals t); the bottom panels plot m(t) for every schedule in masking.SCHEDULES with the share the
collator actually masks over many rows, and the points where an 8-step sampler lands on the same curve.
Writes masking_viz.png, schedules.csv and masked_sequences.csv into --output-dir.
"""

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from textdiffusion import cli, masking, models
from textdiffusion.data import corpus, documents, tokenization
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.metrics import (
    tables,  # run as a path by the seed README: the library only
)

logger = logging.getLogger(__name__)
LEVELS = [round(0.1 * i, 1) for i in range(1, 11)]


@dataclass
class MaskingVizArguments:
    checkpoint: str = field(
        default="results/final-model",
        metadata={"help": "Checkpoint whose tokenizer and layout (line by line, prefix) are shown; when it does not "
                  "exist a BPE tokenizer is trained on the built-in corpus."},
    )
    text: str | None = field(default=None, metadata={"help": "Text to mask. Default: the first validation story of the built-in corpus."})
    prefix_length: int | None = field(default=None, metadata={"help": "Visible prefix. Default: 0 (the checkpoint's maximum is shown in its config)."})
    sampler_steps: int = field(default=8, metadata={"help": "Steps of the sampler drawn on the schedule curves."})
    rows_per_time: int = field(default=64, metadata={"help": "Rows masked per time to measure the collator's masked share."})
    seed: int = field(default=0, metadata={"help": "Random seed of the collator."})
    output_dir: str = field(default="results/experiments/masking_viz", metadata={"help": "Where the PNG and CSVs are written."})


def tokenizer_and_layout(args):
    if Path(args.checkpoint).is_dir():
        checkpoint = models.load_checkpoint(args.checkpoint, "cpu")
        return checkpoint.tokenizer, checkpoint.line_by_line, checkpoint.max_length, args.checkpoint
    logger.info("%s not found: training a BPE tokenizer on the built-in corpus", args.checkpoint)
    tokenizer = tokenization.train_tokenizer(corpus.generate_corpus(2000), "bpe", 1000)
    return tokenizer, True, 48, "BPE tokenizer trained on the built-in corpus"


def masked_grid(tokenizer, row: torch.Tensor, line_by_line: bool, prefix_length: int, seed: int):
    """(levels, seq) bool: which positions the collator masks at each level (linear schedule, so m(t) = t)."""
    collator = DiffusionCollator(
        tokenizer, schedule="linear", prefix_length=prefix_length, line_by_line=line_by_line,
        eval_times=torch.tensor(LEVELS), seed=seed,
    )
    batch = collator([{"input_ids": row} for _ in LEVELS])  # row j gets time LEVELS[j]
    return batch["input_ids"] == tokenizer.mask_token_id, batch["num_maskable"]


def measured_shares(tokenizer, rows: torch.Tensor, line_by_line: bool, seed: int):
    """Per schedule, (times, m(t), the collator's mean masked share at t)."""
    times = torch.linspace(0.02, 1.0, 50)
    result = {}
    for schedule in masking.SCHEDULES:
        shares = []
        for t in times:
            collator = DiffusionCollator(tokenizer, schedule=schedule, line_by_line=line_by_line, eval_times=t.expand(len(rows)), seed=seed)
            shares.append(float(collator([{"input_ids": r} for r in rows])["mask_rate"].mean()))
        result[schedule] = (times, masking.mask_fraction(schedule, times), torch.tensor(shares))
    return result


def token_labels(tokenizer, row: torch.Tensor) -> list[str]:
    return [tok.replace("\u0120", "").replace("\u010a", "\\n") or " " for tok in tokenizer.convert_ids_to_tokens(row.tolist())]


def plot(path: Path, labels, grid, fixed, shares, sampler_steps: int, title: str) -> None:
    plt = tables.pyplot()
    seq = len(labels)
    fig = plt.figure(figsize=(max(12, seq * 0.36), 9.5))
    top = fig.add_axes([0.04, 0.47, 0.94, 0.47])
    for i, level in enumerate(LEVELS):
        y = len(LEVELS) - 1 - i
        for j, label in enumerate(labels):
            masked, special = bool(grid[i, j]), bool(fixed[j])
            colour = "#404040" if masked else ("#d9d9d9" if special else "#f6e8c3")
            top.add_patch(plt.Rectangle((j, y), 0.95, 0.9, color=colour))
            top.text(j + 0.47, y + 0.45, "?" if masked else label, ha="center", va="center", fontsize=6.5,
                     color="white" if masked else "black")
        top.text(-0.3, y + 0.45, f"{level:.1f}  ({int(grid[i].sum())})", ha="right", va="center", fontsize=8)
    top.set_xlim(-4, seq)
    top.set_ylim(0, len(LEVELS))
    top.axis("off")
    top.set_title(f"{title}: dark = <mask>, grey = never masked (start token), level (masked count)", fontsize=10)

    colours = {schedule: f"C{i}" for i, schedule in enumerate(masking.SCHEDULES)}
    left = fig.add_axes([0.06, 0.06, 0.42, 0.33])
    right = fig.add_axes([0.56, 0.06, 0.42, 0.33])
    for schedule, (times, m, measured) in shares.items():
        left.plot(times, m, color=colours[schedule], label=f"{schedule} m(t)")
        left.plot(times, measured, "o", markersize=2.5, color=colours[schedule], alpha=0.6)
        steps = torch.arange(sampler_steps + 1, dtype=torch.float64) / sampler_steps
        right.step(1 - steps, masking.mask_fraction(schedule, 1 - steps), where="post", marker="o", markersize=3,
                   color=colours[schedule], label=schedule)
    left.set(xlabel="t", ylabel="masked share", title="m(t) (lines) and the collator's masked share (dots)")
    right.set(xlabel="t (the sampler walks from 1 to 0)", ylabel="share still masked",
              title=f"the same m(t) after each of {sampler_steps} sampler steps")
    right.invert_xaxis()
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    tables.save_figure(fig, path, layout=None)


def main(argv: list[str] | None = None) -> Path:
    args = cli.parse_args(MaskingVizArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    tokenizer, line_by_line, max_length, source = tokenizer_and_layout(args)
    stories = corpus.generate_corpus(args.rows_per_time, seed=documents.BUILTIN_EVAL_SEED)
    docs = [args.text] if args.text else stories[:1]
    # The whole training row: line by line, the end tokens that fill it are maskable targets too.
    row = torch.tensor(tokenization.tokenize_documents(tokenizer, docs, max_length, True)["input_ids"][0])
    grid, maskable = masked_grid(tokenizer, row, line_by_line, args.prefix_length or 0, args.seed)
    fixed = ~grid.any(0) & (row == tokenization.start_token_id(tokenizer))
    rows = tokenization.tokenize_documents(tokenizer, stories, max_length, line_by_line)["input_ids"]
    shares = measured_shares(tokenizer, torch.tensor(rows), line_by_line, args.seed)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = token_labels(tokenizer, row)
    plot(out / "masking_viz.png", labels, grid, fixed, shares, args.sampler_steps, source)
    with open(out / "schedules.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["schedule", "t", "m_t", "collator_masked_share", "elbo_weight"])
        for schedule, (times, m, measured) in shares.items():
            weights = masking.elbo_weight(schedule, times)
            for values in zip(times.tolist(), m.tolist(), measured.tolist(), weights.tolist()):
                writer.writerow([schedule] + [f"{v:.5f}" for v in values])
    with open(out / "masked_sequences.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["level", "masked_count", "maskable", "sequence"])
        for i, level in enumerate(LEVELS):
            text = " ".join("<mask>" if grid[i, j] else label for j, label in enumerate(labels))
            writer.writerow([level, int(grid[i].sum()), int(maskable[i]), text])
    print(f"wrote {out / 'masking_viz.png'}, schedules.csv and masked_sequences.csv")
    return out / "masking_viz.png"


if __name__ == "__main__":
    cli.run(main)
