"""Generate text with a trained masked-diffusion model: parse -> load -> sample -> print/save.

    python generate.py --schedule cosine                         # results/final-model, text shown step by step
    python generate.py --prefix "tom found" --sampling nucleus --p 0.9 --hide-steps
    python generate.py --infill "tom found a [MASK]*3 in the park ." --output results/samples.jsonl

Other scripts (visualize_generation.py, compare_models.py, experiments/) import `check_sampling_args`, `load`
and `run` from here, so there is one generation loop and one set of checks.
"""

import json
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import asdict
from itertools import groupby
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser

import diffusion
import loading
from config import SamplingArguments
from loading import UsageError

logger = logging.getLogger(__name__)

MASK_SYMBOL = "_"  # how a still-masked position is shown in the step-by-step view


def parse_args(argv: list[str] | None = None) -> SamplingArguments:
    parser = HfArgumentParser(SamplingArguments, description=__doc__.splitlines()[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def resolved_steps(args) -> int:
    # Threshold decoding's steps are only a cap (it stops once nothing is masked); measured best on the built-in
    # corpus in experiments/sampler_quality.py (README, "Measured results").
    if args.steps is not None:
        return args.steps
    return args.max_length if args.strategy == "threshold" else max(1, args.max_length // 4)


def check_sampling_args(args, model=None) -> None:
    """Raise UsageError (one line: the bad value and what is accepted) for the first bad sampling option.

    `args` is a SamplingArguments (or anything with its fields). With `model`, --max-length is also checked
    against the model's positions.
    """
    for flag, value, choices in (
        ("--schedule", args.schedule, diffusion.SCHEDULES),
        ("--strategy", args.strategy, diffusion.STRATEGIES),
        ("--sampling", args.sampling, diffusion.SAMPLING_METHODS),
    ):
        if value not in choices:
            raise UsageError(f"{flag} {value!r} is unknown; choose one of {', '.join(choices)}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps} must be at least 1")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples {args.num_samples} must be at least 1")
    if args.max_length < 2:
        raise UsageError(f"--max-length {args.max_length} must be at least 2 (the start token and one generated token)")
    if model is not None and args.max_length > loading.max_positions(model):
        raise UsageError(
            f"--max-length {args.max_length} is more than the model's {loading.max_positions(model)} positions; "
            f"use --max-length {loading.max_positions(model)} or less"
        )
    if args.top_k < 1:
        raise UsageError(f"--k {args.top_k} must be at least 1")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--p {args.top_p} must be in (0, 1]")
    if args.sampling in ("topk", "nucleus") and not args.temperature > 0:
        raise UsageError(f"--temperature {args.temperature} must be > 0 with --sampling {args.sampling} (or use --sampling greedy)")
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold {args.threshold} must be in (0, 1]")
    if args.block_size is not None and args.block_size < 1:
        raise UsageError(f"--block-size {args.block_size} must be at least 1")
    output = getattr(args, "output", None)
    if output and Path(output).is_dir():
        raise UsageError(f"--output {output} is a directory; give a file name such as {Path(output) / 'samples.jsonl'}")


def load(args):
    """(model, tokenizer, diffusion settings) from --checkpoint, on --device, in eval mode."""
    if not Path(args.checkpoint).is_dir():
        raise UsageError(
            f"--checkpoint {args.checkpoint}: no such directory; train one with `python train.py --quick-test` "
            "(writes results/final-model) or pass the final-model directory train.py wrote"
        )
    try:
        device = loading.pick_device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device} requested but CUDA is not available; use --device cpu")
    model, tokenizer = loading.load_masked_lm(args.checkpoint)
    return model.to(device).eval(), tokenizer, loading.read_diffusion_config(args.checkpoint)


def banned_token_ids(tokenizer, allow_end: bool) -> list[int]:
    """Every special token (mask, padding, start, unknown ...), except the end token when it may be sampled.

    A line-by-line model learned to end each document with the end token, so it may place it where the text
    should stop; a model trained on packed text never saw a document end inside its window.
    """
    end = loading.end_token_id(tokenizer)
    return [i for i in loading.special_token_ids(tokenizer) if not (allow_end and i == end)]


def sampler_config(args) -> diffusion.SamplerConfig:
    return diffusion.SamplerConfig(
        steps=resolved_steps(args), schedule=args.schedule, strategy=args.strategy, sampling=args.sampling,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, threshold=args.threshold,
        block_size=args.block_size,
    )


def run(args, model, tokenizer, line_by_line: bool | None = None, progress: bool | None = None):
    """Sample `args.num_samples` texts: (SampleResult, texts, seconds). The generation loop every script uses.

    `line_by_line` says how the model was trained (None: read from args.checkpoint's diffusion_config.json).
    `progress`: None shows a tqdm bar on a terminal for runs longer than a second, True always, False never.
    """
    check_sampling_args(args, model)
    if line_by_line is None:
        line_by_line = bool(loading.read_diffusion_config(args.checkpoint).get("line_by_line", False))
    try:
        input_ids = diffusion.build_inputs(
            tokenizer, args.prefix, args.max_length, args.num_samples, args.infill, end_token=line_by_line
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    # In an infill template the document's end is fixed by the template, so no end token inside the gaps.
    banned = banned_token_ids(tokenizer, allow_end=line_by_line and args.infill is None)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(args.seed)
    config = sampler_config(args)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    bar = tqdm(total=config.steps, desc="sampling", unit="step", delay=1.0, leave=False, disable=None if progress is None else not progress)
    start = time.perf_counter()
    with autocast:
        result = diffusion.sample(
            model, input_ids, tokenizer.mask_token_id, config, banned, generator, progress=bar.update
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return result, diffusion.decode_texts(tokenizer, result.ids, stop_at_end=line_by_line), seconds


def render_state(tokenizer, ids: torch.Tensor, stop_at_end: bool = True, mask_symbol: str = MASK_SYMBOL) -> str:
    """One row of ids (seq,) as text with each masked position shown as `mask_symbol`."""
    row = ids.tolist()
    if row and row[0] == loading.start_token_id(tokenizer):
        row = row[1:]
    end = loading.end_token_id(tokenizer)
    if stop_at_end and end in row:
        row = row[: row.index(end)]
    text = ""
    for is_mask, run_ in groupby(row, key=lambda i: i == tokenizer.mask_token_id):
        run_ = list(run_)
        piece = " ".join([mask_symbol] * len(run_)) if is_mask else tokenizer.decode(run_, clean_up_tokenization_spaces=False)
        if text and not text[-1].isspace() and not piece[:1].isspace():
            text += " "  # masks stand for whole tokens; keep them apart from their neighbours
        text += piece
    return text.strip()


def print_steps(tokenizer, result: diffusion.SampleResult, stop_at_end: bool, row: int = 0) -> None:
    """The text of sample `row` after each step of the trajectory (step 0: all masked)."""
    last = len(result.trajectory) - 1
    width = len(str(last))
    for k, step in enumerate(result.trajectory):
        print(f"[{k:>{width}}/{last}] {render_state(tokenizer, step.ids[row], stop_at_end)}")
    print()


def save_jsonl(path: str, args, result: diffusion.SampleResult, texts: list[str], seconds: float, line_by_line: bool) -> None:
    """One JSON object per sample; written to a temporary file and renamed, so never half-written."""
    settings = {k: v for k, v in asdict(args).items() if k not in ("output", "hide_steps")}
    settings.update(steps=resolved_steps(args), line_by_line=line_by_line)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            record = {
                "sample": i, "text": text, "prefix": args.prefix, "infill": args.infill,
                "steps": settings["steps"], "nfe": result.nfe, "seconds": round(seconds, 4), "settings": settings,
            }
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    check_sampling_args(args)
    model, tokenizer, settings = load(args)
    line_by_line = bool(settings.get("line_by_line", False))
    result, texts, seconds = run(args, model, tokenizer, line_by_line)
    if not args.hide_steps:
        print_steps(tokenizer, result, stop_at_end=line_by_line)
    for text in texts:
        print(text)
    logger.info("%d samples, %d forward passes, %.2f s", len(texts), result.nfe, seconds)
    if args.output:
        save_jsonl(args.output, args, result, texts, seconds, line_by_line)
        logger.info("samples written to %s", args.output)
    return texts


if __name__ == "__main__":
    # main() itself raises UsageError, so tests and other scripts can call it; the command line gets one line + exit 2.
    loading.reports_usage_errors(main)()
