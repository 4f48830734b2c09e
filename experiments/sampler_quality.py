"""Sampler quality on the built-in corpus: valid and novel stories per strategy x schedule x steps.

    python -m experiments.sampler_quality                                  # results/final-model, full grid
    python -m experiments.sampler_quality --checkpoint runs/dev-model --strategies confidence remask --steps 8 L
    python -m experiments.sampler_quality --schedules cosine --steps 20 24 --num-samples 256 --seed 1   # under a step cap

For a checkpoint trained on the built-in corpus (`python train.py --quick-test`), every setting generates
--num-samples documents with sampling.generate and reports the share `corpus.is_valid_story` accepts, the share that
is not a verbatim copy of a training story, the share that is both, how far the stories' lengths and openings are
from the corpus's mix (shape, opening: total variation distance), forward passes and seconds. "L" in --steps
means one step per generated token. Writes sampler_quality.csv into --output-dir.
"""

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from experiments.helpers import tables
from textdiffusion import cli, masking, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus, documents
from textdiffusion.metrics import text_metrics

logger = logging.getLogger(__name__)


@dataclass
class QualityArguments:
    checkpoint: str = field(default="results/final-model", metadata={"help": "Diffusion checkpoint trained on the built-in corpus."})
    strategies: list[str] = field(default_factory=lambda: list(sampling.STRATEGIES), metadata={"help": "Strategies to compare."})
    schedules: list[str] = field(default_factory=lambda: list(masking.SCHEDULES), metadata={"help": "Schedules to compare."})
    steps: list[str] = field(default_factory=lambda: ["4", "8", "16", "L"], metadata={"help": "Step counts; L = the generated length."})
    num_samples: int = field(default=64, metadata={"help": "Documents per setting (one batch)."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens per sample. Default: the checkpoint's training length."})
    prefix: str = field(default="", metadata={"help": "Text every document starts with."})
    sampling: str = field(default="topk", metadata={"help": "greedy, topk or nucleus."})
    top_k: int = field(default=50, metadata={"help": "k for topk."})
    top_p: float = field(default=0.9, metadata={"help": "p for nucleus."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature."})
    threshold: float = field(default=0.9, metadata={"help": "Confidence threshold of the threshold strategy."})
    block_size: int | None = field(default=None, metadata={"help": "Semi-autoregressive blocks of this many tokens (as generate.py --block-size)."})
    train_stories: int | None = field(
        default=None,
        metadata={"help": "Training stories (corpus.generate_corpus(n, seed=0)) for the novelty check. Default: read "
        "from the checkpoint's ../run_args.json, else documents.BUILTIN_TRAIN_STORIES."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed (the same for every setting)."})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads (1 is faster on a busy CPU)."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda ... Default: cuda when available."})
    output_dir: str = field(default="results/sampler_quality", metadata={"help": "Where sampler_quality.csv is written."})


def training_story_count(args) -> int:
    """How many built-in stories the checkpoint was trained on (run_args.json sits next to final-model)."""
    if args.train_stories:
        return args.train_stories
    run_args = Path(args.checkpoint).parent / "run_args.json"
    if run_args.is_file():
        data = json.loads(run_args.read_text()).get("DataArguments", {})
        if data.get("train_file") or data.get("dataset_name") != documents.BUILTIN:
            logger.warning("%s was not trained on the built-in corpus; novelty is measured against it anyway", args.checkpoint)
        return data.get("max_train_samples") or documents.BUILTIN_TRAIN_STORIES
    logger.warning("no %s: assuming %d training stories", run_args, documents.BUILTIN_TRAIN_STORIES)
    return documents.BUILTIN_TRAIN_STORIES


def step_counts(args, tokenizer, max_length: int) -> list[int]:
    generated = int((sampling.build_inputs(tokenizer, args.prefix, max_length) == tokenizer.mask_token_id).sum())
    counts = []
    for value in args.steps:
        if value == "L":
            counts.append(generated)
        elif value.isdigit() and int(value) >= 1:
            counts.append(int(value))
        else:
            raise UsageError(f"--steps {value!r}: give positive integers or L (the generated length, {generated} here)")
    return counts


def evaluate(args) -> list[dict]:
    for flag, values, table in (("--strategies", args.strategies, sampling.STRATEGIES), ("--schedules", args.schedules, masking.SCHEDULES)):
        for value in values:
            if value not in table:
                raise UsageError(f"{flag} {value!r} is unknown; choose from {', '.join(table)}")
    checkpoint = models.load_checkpoint(args.checkpoint, args.device)
    tokenizer = checkpoint.tokenizer
    max_length = args.max_length or checkpoint.max_length
    training = {" ".join(story.split()) for story in corpus.generate_corpus(training_story_count(args), seed=0)}
    grid = list(itertools.product(args.strategies, args.schedules, step_counts(args, tokenizer, max_length)))
    rows = []
    reference = text_metrics.reference_stories()  # the corpus's mix of story lengths and openings
    for strategy, schedule, steps in tqdm(grid, desc="settings"):
        settings = sampling.GenerationSettings(
            prefix=args.prefix, max_length=max_length, num_samples=args.num_samples, steps=steps, schedule=schedule,
            strategy=strategy, sampling=args.sampling, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
            threshold=args.threshold, block_size=args.block_size, seed=args.seed,
        )
        out = sampling.generate(checkpoint, settings, progress=False)
        texts = out.texts
        valid = [corpus.is_valid_story(text) for text in texts]
        novel = [" ".join(text.split()) not in training for text in texts]
        rows.append(dict(
            strategy=strategy, schedule=schedule, steps=steps, nfe=out.nfe,
            well_formed=sum(map(corpus.is_well_formed, texts)) / len(texts),
            valid=sum(valid) / len(texts), novel=sum(novel) / len(texts),
            valid_novel=sum(v and n for v, n in zip(valid, novel)) / len(texts),
            distinct=len(set(texts)) / len(texts), shape=text_metrics.shape_distance(texts, reference),
            opening=text_metrics.opening_distance(texts, reference), seconds=out.seconds,
        ))
    return rows


COLUMNS = ["strategy", "schedule", "steps", "nfe", "well_formed", "valid", "novel", "valid_novel", "distinct", "shape", "opening", "seconds"]


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(QualityArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = evaluate(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "sampler_quality.csv", rows, COLUMNS)
    blocks = f", --block-size {args.block_size}" if args.block_size else ""
    print(f"{args.checkpoint}, {args.num_samples} documents per setting, --sampling {args.sampling}{blocks}, seed {args.seed}; "
          "well_formed = corpus.is_well_formed (grammar only), valid = corpus.is_valid_story, novel = not a training story verbatim, "
          "shape / opening = total variation distance from the corpus's mix of story lengths / first two words (0 = the same)")
    print(tables.markdown_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    cli.run(main)
