"""Generate text with a trained masked-diffusion model: parse -> load -> sample -> print/save.

    python generate.py --schedule cosine                         # results/final-model, text shown step by step
    python generate.py --prefix "tom found" --sampling nucleus --p 0.9 --hide-steps
    python generate.py --infill "tom found a [MASK]*3 in the park ." --output results/samples.jsonl

The work is done by the library (models.load_checkpoint, sampling.generate); this script parses, prints and writes.
"""

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from config import SamplingArguments
from textdiffusion import cli, models, sampling
from textdiffusion.sampling.prompts import clean_prefix

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> SamplingArguments:
    return cli.parse_args(SamplingArguments, argv, description=__doc__.splitlines()[0])


class StepPrinter(BaseStreamer):
    """The step-by-step view, a streamer of transformers' TextDiffusionStreamer protocol fed by the sampler: the
    text of sample `row` after each step, from step 0 (all masked) on. The lines are printed at end(): each one's
    `[k/last]` needs the number of steps, known only then (threshold strategies stop early, a block model after
    the block in which every row ended). tqdm.write, so they never land on a progress bar's line."""

    _takes_start_draft = True  # step 0, the start, as the first draft

    def __init__(self, tokenizer, stop_at_end: bool, row: int = 0):
        self.tokenizer, self.stop_at_end, self.row = tokenizer, stop_at_end, row
        self.final, self.lines = [], []  # ids confirmed so far (prompt, finished blocks); one text per step

    def put(self, value: torch.Tensor) -> None:
        self.final.append(value[self.row])  # (batch, n) confirmed tokens

    def put_draft(self, value: torch.Tensor, **kwargs) -> None:
        row = torch.cat([*self.final, value[self.row]])  # value (batch, n): the positions not yet confirmed
        self.lines.append(sampling.render_state(self.tokenizer, row, self.stop_at_end))

    def end(self) -> None:
        last = len(self.lines) - 1
        tqdm.write("".join(f"[{k:>{len(str(last))}}/{last}] {line}\n" for k, line in enumerate(self.lines)))
        self.final, self.lines = [], []


def save_jsonl(path: str, args: SamplingArguments, out: sampling.Generation, line_by_line: bool) -> None:
    """One JSON object per sample; written to a temporary file and renamed, so never half-written."""
    settings = {k: v for k, v in asdict(args).items() if k not in ("output", "hide_steps")}
    settings.update(steps=args.resolved_steps, line_by_line=line_by_line)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with cli.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i, text in enumerate(out.texts):
            record = {
                "sample": i, "text": text, "prefix": args.prefix, "infill": args.infill,
                "steps": settings["steps"], "nfe": out.nfe, "seconds": round(out.seconds, 4), "settings": settings,
            }
            f.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    cli.log_to_stderr()
    args.check()
    args.prefix = clean_prefix(args.prefix)  # only whitespace: no prompt, said in one line
    checkpoint = models.load_checkpoint(args.checkpoint, args.device, dtype=args.dtype, compile=args.torch_compile)
    steps = None if args.hide_steps else StepPrinter(checkpoint.tokenizer, stop_at_end=checkpoint.line_by_line)
    out = sampling.generate(checkpoint, args, streamer=steps)
    for text in out.texts:
        print(text)
    prompt = "an infill template" if args.infill is not None else f"the prompt {args.prefix!r}" if args.prefix else "no prompt"
    logger.info("%d samples from %s, %d forward passes, %.2f s", len(out.texts), prompt, out.nfe, out.seconds)
    if args.output:
        save_jsonl(args.output, out.settings, out, checkpoint.line_by_line)
        logger.info("samples written to %s", args.output)
    return out.texts


if __name__ == "__main__":
    cli.run(main)
