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

from config import SamplingArguments
from textdiffusion import cli, models, sampling
from textdiffusion.sampling.prompts import clean_prefix

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> SamplingArguments:
    return cli.parse_args(SamplingArguments, argv, description=__doc__.splitlines()[0])


def print_steps(tokenizer, result: sampling.SampleResult, stop_at_end: bool, row: int = 0) -> None:
    """The text of sample `row` after each step of the trajectory (step 0: all masked)."""
    last = len(result.trajectory) - 1
    width = len(str(last))
    for k, step in enumerate(result.trajectory):
        print(f"[{k:>{width}}/{last}] {sampling.render_state(tokenizer, step.ids[row], stop_at_end)}")
    print()


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
    checkpoint = models.load_checkpoint(args.checkpoint, args.device)
    out = sampling.generate(checkpoint, args)
    if not args.hide_steps:
        print_steps(checkpoint.tokenizer, out.result, stop_at_end=checkpoint.line_by_line)
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
