"""Logit lens: how well each layer's hidden state already predicts the masked tokens, per mask level.

    python -m experiments.layer_analysis --checkpoint results/final-model
    python -m experiments.layer_analysis --checkpoint results/checkpoint-1000   # a Trainer checkpoint works too

Each hidden state (the embeddings, then every layer; output_hidden_states=True) goes through the model's own
LM head, and the top-1 accuracy and cross-entropy at the masked positions are measured at mask levels
0.1 ... 1.0 (the collator at fixed times, linear schedule, so the level is the masked share). A Trainer
checkpoint-N directory may hold no tokenizer: the one in the parent's final-model/ or tokenizer/ is used.
Writes layer_analysis.png (heatmap) and layer_analysis.csv into --output-dir.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from textdiffusion import cli, models
from textdiffusion.data import corpus, documents, tokenization
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.metrics import (
    tables,  # run as a path by the seed README: the library only
)

logger = logging.getLogger(__name__)
LEVELS = [round(0.1 * i, 1) for i in range(1, 11)]


@dataclass
class LayerArguments:
    checkpoint: str = field(default="results/final-model", metadata={"help": "Masked-LM checkpoint: final-model or a Trainer checkpoint-N directory."})
    validation_file: str | None = field(default=None, metadata={"help": "Text to measure on (.txt/.jsonl). Default: built-in validation stories."})
    num_documents: int = field(default=128, metadata={"help": "Documents measured at every level."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per forward pass."})
    seed: int = field(default=0, metadata={"help": "Seed of the masking."})
    output_dir: str = field(default="results/experiments/layer_analysis", metadata={"help": "Where the PNG and CSV are written."})


def lm_head(model):
    """The module that turns a hidden state into logits (models.prediction_head, else the output embeddings)."""
    return models.prediction_head(model) or model.get_output_embeddings()


@torch.no_grad()
def logit_lens(model, tokenizer, rows: torch.Tensor, line_by_line: bool, batch_size: int, seed: int) -> list[dict]:
    """One dict per (layer, level): accuracy and cross-entropy of the layer's prediction at masked positions."""
    head = lm_head(model)
    end = tokenization.end_token_id(tokenizer)
    banned = torch.tensor(sorted({tokenizer.mask_token_id, tokenizer.pad_token_id, tokenization.start_token_id(tokenizer)}))
    results = []
    for level in LEVELS:
        collator = DiffusionCollator(tokenizer, schedule="linear", line_by_line=line_by_line, seed=seed,
                                     eval_times=torch.tensor([level]))
        sums = None
        for start in range(0, len(rows), batch_size):
            batch = collator([{"input_ids": r} for r in rows[start : start + batch_size]])
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            masked = batch["labels"] != -100  # (batch, seq)
            labels = batch["labels"][masked]
            layer_stats = []
            for hidden in out.hidden_states:  # embeddings, then each layer: (batch, seq, hidden)
                logits = head(hidden[masked]).float().index_fill(-1, banned, float("-inf"))  # (masked, vocab)
                right = logits.argmax(-1) == labels
                text = labels != end  # line by line, the end tokens filling the row are guessable from position
                ce = F.cross_entropy(logits, labels, reduction="sum")
                layer_stats.append(torch.tensor([right.sum(), ce, len(labels), (right & text).sum(), text.sum()], dtype=torch.float64))
            stats = torch.stack(layer_stats)  # (layers + 1, 5)
            sums = stats if sums is None else sums + stats
        for layer, (correct, ce, count, text_correct, text_count) in enumerate(sums.tolist()):
            results.append({
                "layer": layer, "level": level, "accuracy": correct / count, "cross_entropy": ce / count,
                "tokens": int(count), "text_accuracy": text_correct / max(text_count, 1), "text_tokens": int(text_count),
            })
    return results


def plot(path: Path, results: list[dict], title: str) -> None:
    plt = tables.pyplot()
    layers = max(r["layer"] for r in results) + 1
    fig, axes = plt.subplots(1, 2, figsize=(15, 1.6 + 0.6 * layers), gridspec_kw={"wspace": 0.35})
    for ax, key, name in ((axes[0], "accuracy", "all masked positions"), (axes[1], "text_accuracy", "masked text tokens (end tokens excluded)")):
        grid = torch.zeros(layers, len(LEVELS))
        for r in results:
            grid[r["layer"], LEVELS.index(r["level"])] = r[key]
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
        for i in range(layers):
            for j in range(len(LEVELS)):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white" if grid[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(LEVELS)), [f"{level:.1f}" for level in LEVELS])
        ax.set_yticks(range(layers), ["embeddings"] + [f"layer {i}" for i in range(1, layers)])
        ax.set(xlabel="mask level (share of tokens masked)", title=f"top-1 accuracy, {name}")
    fig.colorbar(image, ax=axes, label="accuracy")
    fig.suptitle(f"Logit lens: each layer's hidden state through the LM head. {title}", fontsize=10)
    tables.save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(LayerArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    checkpoint = models.load_checkpoint(args.checkpoint, "cpu")
    model, tokenizer, line_by_line, max_length = checkpoint.model, checkpoint.tokenizer, checkpoint.line_by_line, checkpoint.max_length
    if args.validation_file:
        docs = documents.read_documents(args.validation_file, line_by_line)[: args.num_documents]
    else:
        docs = corpus.generate_corpus(args.num_documents, seed=documents.BUILTIN_EVAL_SEED)
    rows = torch.tensor(tokenization.tokenize_documents(tokenizer, docs, max_length, line_by_line)["input_ids"])
    results = logit_lens(model, tokenizer, rows, line_by_line, args.batch_size, args.seed)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(out / "layer_analysis.png", results, f"{args.checkpoint}, {len(rows)} sequences of {max_length} tokens")
    tables.write_csv(out / "layer_analysis.csv", results)
    last = max(r["layer"] for r in results)
    print("accuracy at masked text tokens (rows: mask level, columns: embeddings, layer 1 ...)")
    print("level  " + "  ".join(f"L{layer}" for layer in range(last + 1)))
    for level in LEVELS:
        print(f"{level:.1f}    " + "  ".join(f"{r['text_accuracy']:.2f}" for r in results if r["level"] == level))
    return results


if __name__ == "__main__":
    cli.run(main)
