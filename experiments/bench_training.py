"""Training throughput: supervised (masked) tokens per second, and collator time per batch against a naive one.

    python -m experiments.bench_training                      # tiny model, built-in corpus, CPU
    python -m experiments.bench_training --batch-size 64 --max-length 128 --steps 30 --vocab-size 4000

The naive collator does what the seed project did: per row, ask the tokenizer for its special-token mask, pad
the row on its own, and mask it with its own Python loop, and the step applies the LM head at every position.
train.py's step uses the vectorised collator and applies the head only at the masked positions
(`blocks.masked_logits`); a third row times the vectorised collator with the head at every position, to show
what each change buys. All run on the same rows in the same run. Writes a CSV and prints a markdown table.
"""

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from experiments.helpers import tables
from textdiffusion import blocks, cli, models
from textdiffusion.data import corpus, documents, tokenization
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.masking.loss import diffusion_loss, masked_diffusion_loss


class NaiveCollator:
    """The seed project's collator: one rate per batch, per-row special-token masks, padding and masking."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, examples):
        rate = random.choice([0.1 * i for i in range(1, 11)])
        longest = max(len(e["input_ids"]) for e in examples)
        inputs, labels, attention = [], [], []
        for example in examples:
            ids = list(example["input_ids"])
            special = self.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
            padded = ids + [self.tokenizer.pad_token_id] * (longest - len(ids))
            special += [1] * (longest - len(ids))
            row_in, row_lab = [], []
            for token, is_special in zip(padded, special):
                if not is_special and random.random() < rate:
                    row_in.append(self.tokenizer.mask_token_id)
                    row_lab.append(token)
                else:
                    row_in.append(token)
                    row_lab.append(-100)
            inputs.append(row_in)
            labels.append(row_lab)
            attention.append([1] * len(ids) + [0] * (longest - len(ids)))
        return {"input_ids": torch.tensor(inputs), "labels": torch.tensor(labels), "attention_mask": torch.tensor(attention)}


def time_collator(collator, rows, batch_size, repeats):
    batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)][:repeats]
    start = time.perf_counter()
    for batch in batches:
        collator(batch)
    return (time.perf_counter() - start) / len(batches)


@dataclass
class BenchTrainingArguments:
    model_size: Literal[tuple(models.MODEL_SIZES)] = field(default="tiny", metadata={"help": "Model built from a config."})
    batch_size: int = field(default=64, metadata={"help": "Rows per batch."})
    max_length: int = field(default=128, metadata={"help": "Tokens per row (rows are cut to between half and all of it)."})
    steps: int = field(default=20, metadata={"help": "Training steps timed (after 3 warm-up steps)."})
    vocab_size: int = field(default=1000, metadata={"help": "BPE vocabulary of the tokenizer (the LM head's width)."})
    text_file: str | None = field(default=None, metadata={"help": "Train on this text (e.g. ../shared/data/tinyshakespeare/input.txt) instead of the built-in stories, whose few hundred words cap the vocabulary."})
    architecture: Literal[models.ARCHITECTURES] = field(default="roberta", metadata={"help": "Masked-LM architecture."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    output_dir: str = field(default="results/bench_training", metadata={"help": "Where bench_training.csv is written."})


def main(argv=None):
    args = cli.parse_args(BenchTrainingArguments, argv, __doc__.splitlines()[0])
    if args.batch_size < 1 or args.max_length < 8 or args.steps < 1 or args.vocab_size < 100:
        raise cli.UsageError("--batch-size and --steps must be at least 1, --max-length at least 8 and --vocab-size at least 100")
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    torch.manual_seed(0)

    if args.text_file and not Path(args.text_file).is_file():
        raise cli.UsageError(f"--text-file {args.text_file}: no such file")
    docs = documents.read_documents(args.text_file, line_by_line=True) if args.text_file else corpus.generate_corpus(4000)
    tokenizer = tokenization.train_tokenizer(docs, "bpe", args.vocab_size)
    data = tokenization.tokenize_documents(tokenizer, docs, args.max_length, line_by_line=False)
    # Rows of varied length (as in line-by-line data before padding) so padding work is part of the cost.
    rows = [{"input_ids": row["input_ids"][: random.randint(args.max_length // 2, args.max_length)]} for row in data]
    ours = DiffusionCollator(tokenizer, seed=0)
    naive = NaiveCollator(tokenizer)
    repeats = max(5, min(50, len(rows) // args.batch_size))
    naive_s = time_collator(naive, rows, args.batch_size, repeats)
    ours_s = time_collator(ours, rows, args.batch_size, repeats)

    model = models.build_model("diffusion", args.model_size, tokenizer, args.max_length, architecture=args.architecture)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    table = []
    for name, collator, sparse in (("naive (seed)", naive, False), ("vectorised", ours, False), ("vectorised", ours, True)):
        supervised, elapsed = 0, 0.0
        for step in range(args.steps + 3):
            batch_rows = rows[(step * args.batch_size) % (len(rows) - args.batch_size) :][: args.batch_size]
            start = time.perf_counter()
            batch = collator(batch_rows)
            ones = torch.ones(len(batch_rows))
            if sparse:
                logits, targets, unit = blocks.masked_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"], None)
                loss, _, count = masked_diffusion_loss(logits, targets, unit, ones, ones, "uniform")
            else:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss, _, count = diffusion_loss(logits, batch["labels"], ones, ones, "uniform")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step >= 3:
                elapsed += time.perf_counter() - start
                supervised += int(count.sum())
        table.append({"collator": name, "lm_head": "masked positions" if sparse else "every position",
                      "collate_ms_per_batch": (naive_s if collator is naive else ours_s) * 1e3,
                      "supervised_tokens_per_s": supervised / elapsed, "step_s": elapsed / args.steps})

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "bench_training.csv", table)
    print(f"model {args.model_size} {args.architecture}, vocabulary {len(tokenizer)}, batch {args.batch_size} x "
          f"{args.max_length} tokens, {args.steps} steps, {torch.get_num_threads()} threads")
    print("| collator | LM head at | collate ms/batch | supervised tokens/s | s/step |")
    print("|---|---|---|---|---|")
    for row in table:
        print(f"| {row['collator']} | {row['lm_head']} | {row['collate_ms_per_batch']:.2f} | "
              f"{row['supervised_tokens_per_s']:.0f} | {row['step_s']:.3f} |")
    print(f"collator speed-up: {naive_s / ours_s:.1f}x; head only at masked positions: "
          f"{table[1]['step_s'] / table[2]['step_s']:.2f}x faster steps")


if __name__ == "__main__":
    cli.run(main)
