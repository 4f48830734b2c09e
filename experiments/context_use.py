"""Does the model read its context yet? Masked-token loss with the real context vs another document's context.

    python -m experiments.context_use --checkpoint runs/benchmark/shakespeare/default/diffusion/final-model \
        --validation-file ../shared/data/wikitext-2-raw/wiki.test.raw

Held-out blocks are masked at --mask-level (fixed seed); the visible tokens of each block are then swapped for
those of another block, leaving the masked positions where they are. A model that uses its context loses
accuracy when the context is not its own; a model that has only learned how frequent each token is (the
plateau masked LMs sit on early in training) scores the same both ways. Prints both cross-entropies and the gap,
and writes context_use.csv into --output-dir.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.helpers import tables
from textdiffusion import cli, models
from textdiffusion.cli import UsageError
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.metrics import evaluation

logger = logging.getLogger(__name__)


@dataclass
class ContextArguments:
    checkpoint: str = field(default="results/final-model", metadata={"help": "Masked-LM checkpoint directory."})
    validation_file: str | None = field(default=None, metadata={"help": "Held-out text. Default: the built-in corpus's validation stories."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens per block. Default: the checkpoint's training length."})
    mask_levels: list[float] = field(default_factory=lambda: [0.15, 0.5], metadata={"help": "Shares of each block masked."})
    max_blocks: int = field(default=128, metadata={"help": "Held-out blocks scored."})
    seed: int = field(default=0, metadata={"help": "Seed of the masks and of the context swap."})
    output_dir: str = field(default="results/context_use", metadata={"help": "Where context_use.csv is written."})


@torch.no_grad()
def context_gap(model, tokenizer, rows: torch.Tensor, level: float, line_by_line: bool, seed: int) -> dict:
    """Cross-entropy at masked positions with the blocks' own context and with a rotated one."""
    if len(rows) < 2:
        raise UsageError("the held-out text gives fewer than two blocks; a context swap needs two")
    collator = DiffusionCollator(tokenizer, line_by_line=line_by_line, eval_times=torch.tensor([level]), seed=seed)
    batch = collator([{"input_ids": r} for r in rows])
    masked = batch["labels"] != -100
    # Every block gets the next block's visible tokens (a rotation: never its own), at its own masked positions.
    swapped = torch.where(masked, batch["input_ids"], batch["input_ids"].roll(1, dims=0))

    def loss(ids):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
        return torch.nn.functional.cross_entropy(logits[masked], batch["labels"][masked]).item()

    own, other = loss(batch["input_ids"]), loss(swapped)
    return {"mask_level": level, "masked_tokens": int(masked.sum()), "ce_own_context": own, "ce_other_context": other, "gap": other - own}


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(ContextArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if any(not 0 < level <= 1 for level in args.mask_levels):
        raise UsageError(f"--mask-levels {args.mask_levels}: each must be in (0, 1]")
    checkpoint = models.load_checkpoint(args.checkpoint, "cpu")
    model, tokenizer, line_by_line = checkpoint.model, checkpoint.tokenizer, checkpoint.line_by_line
    length = args.max_length or checkpoint.max_length
    docs = evaluation.load_evaluation_documents(args.validation_file, line_by_line)
    rows = evaluation.evaluation_rows(tokenizer, docs, length, line_by_line)[: args.max_blocks]
    results = [context_gap(model, tokenizer, rows, level, line_by_line, args.seed) for level in args.mask_levels]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "context_use.csv", results)
    print(f"{args.checkpoint}: {len(rows)} blocks of {length} tokens")
    for r in results:
        print(f"mask {r['mask_level']:.2f}: cross-entropy {r['ce_own_context']:.3f} with its own context, "
              f"{r['ce_other_context']:.3f} with another block's (gap {r['gap']:+.3f} nats)")
    return results


if __name__ == "__main__":
    cli.run(main)
