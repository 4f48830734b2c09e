"""minimal-text-diffusion's job: learn a small word-level corpus from scratch, sample it, and control what it writes.

    python -m experiments.simple_corpus                           # the `simple` corpus, seeds 0 1 2, 1500 steps
    python -m experiments.simple_corpus --corpus greetings --max-steps 600
    python -m experiments.simple_corpus --seeds 0 --max-steps 20 --num-samples 16   # a smoke run

Per seed, two models of the same size, preset, data and steps (`train.py --from-scratch --model-size tiny
--tokenizer-type word --line-by-line`): the diffusion model and the matched GPT-2 (`--objective ar`). The
corpora are minimal-text-diffusion's, in ../shared/data/simple/ (its *-test.txt held out). Measured:

- bound_ratio: the diffusion model's ELBO bound over the GPT-2's exact perplexity, nats per token, on the same
  held-out tokens (evaluation.report);
- pattern: the share of unconditional samples that follow the corpus's sentence pattern, "The <colour> <food> is
  <adjective>." with every slot filled by a word that fills that slot in training (simple corpus only);
  novel: the share not among the training sentences; novel_pattern: both;
- control (simple corpus): 128 requests "a sentence about <food> in <colour>", each a (colour, food) pair drawn
  from the training words. The diffusion model fills the template `[MASK] <colour> <food> is [MASK]` (the words
  before and after the given ones), without and with classifier-free guidance (--cfg-scale 1); the GPT-2 continues
  `The <colour> <food> is`. Satisfied: the text follows the pattern with the requested colour and food.

Writes simple_corpus.csv (one row per seed and model) and samples.txt into --output-dir, prints the table and
min / median / max over the seeds.
"""

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.helpers import tables, training_runs
from textdiffusion import cli, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.metrics import evaluation

logger = logging.getLogger(__name__)
CORPORA = {"simple": ("simple-train.txt", "simple-test.txt", 12), "greetings": ("greetings-train.txt", "greetings-test.txt", 20)}
SENTENCE = re.compile(r"The (\S+) (.+) is (\S+)\.")
COLUMNS = ["seed", "model", "bound_ratio", "nats_per_token", "pattern", "novel", "novel_pattern", "control", "control_cfg", "gen_ppl"]


@dataclass
class SimpleCorpusArguments:
    corpus: str = field(default="simple", metadata={"choices": tuple(CORPORA), "help": "Which of minimal-text-diffusion's corpora."})
    data_dir: str = field(default="../shared/data/simple", metadata={"help": "The folder with simple-train.txt, greetings-train.txt and their -test.txt files."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds (one diffusion model and one GPT-2 each)."})
    max_steps: int = field(default=1500, metadata={"help": "Training steps of each model (batch 64)."})
    num_samples: int = field(default=256, metadata={"help": "Unconditional samples per model."})
    num_requests: int = field(default=128, metadata={"help": "Controlled-generation requests per model (simple corpus)."})
    threads: int | None = field(default=None, metadata={"help": "torch threads for training and sampling. Default: torch's own."})
    output_dir: str = field(default="runs/simple_corpus", metadata={"help": "Models (one folder per seed and model), CSV and samples."})


class Pattern:
    """The simple corpus's sentence pattern, with each slot's words read from the training sentences."""

    def __init__(self, training: list[str]):
        slots = [m.groups() for m in map(SENTENCE.fullmatch, training) if m]
        self.colours, self.foods, self.adjectives = (sorted({s[i] for s in slots}) for i in range(3))

    def follows(self, text: str, colour: str | None = None, food: str | None = None) -> bool:
        m = SENTENCE.fullmatch(text.strip())
        if not m or m[1] not in self.colours or m[2] not in self.foods or m[3] not in self.adjectives:
            return False
        return (colour is None or m[1] == colour) and (food is None or m[2] == food)


def flags(args, seed: int, objective: str) -> list[str]:
    train, test, length = CORPORA[args.corpus]
    data = Path(args.data_dir)
    return ["--from-scratch", "--model-size", "tiny", "--train-file", str(data / train), "--validation-file", str(data / test),
            "--line-by-line", "--tokenizer-type", "word", "--max-length", str(length), "--per-device-train-batch-size", "64",
            "--max-steps", str(args.max_steps), "--eval-steps", str(max(args.max_steps // 3, 1)), "--save-steps", str(args.max_steps),
            "--logging-steps", str(max(args.max_steps // 10, 1)), "--seed", str(seed), "--objective", objective, "--overwrite-output-dir", "true"]


def requests(pattern: Pattern, count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(rng.choice(pattern.colours), rng.choice(pattern.foods)) for _ in range(count)]


def controlled(checkpoint, ar, pattern: Pattern, asks: list[tuple[str, str]], length: int, seed: int) -> dict:
    """Shares of requests satisfied: diffusion by infill (cfg 0 and 1), GPT-2 by continuing the prompt."""
    shares = {"diffusion": [0, 0], "autoregressive": [0]}
    for colour, food in asks:
        template = f"[MASK] {colour} {food} is [MASK]"
        for i, cfg in enumerate((0.0, 1.0)):
            settings = sampling.GenerationSettings(infill=template, num_samples=1, max_length=length, seed=seed, cfg_scale=cfg)
            text = sampling.generate(checkpoint, settings, progress=False).texts[0]
            shares["diffusion"][i] += pattern.follows(text, colour, food)
        settings = sampling.GenerationSettings(prefix=f"The {colour} {food} is", num_samples=1, max_length=length, seed=seed)
        text = sampling.sample_autoregressive(*ar, settings).texts[0]
        shares["autoregressive"][0] += pattern.follows(text, colour, food)
    return {model: [s / len(asks) for s in counts] for model, counts in shares.items()}


def measure_seed(args, seed: int, out: Path, training: list[str], pattern: Pattern | None) -> tuple[list[dict], dict]:
    dirs = {objective: out / f"{objective}-seed{seed}" for objective in ("diffusion", "ar")}
    for objective, directory in dirs.items():
        training_runs.train_and_measure(flags(args, seed, objective), directory, args.threads)
    checkpoint = models.load_checkpoint(str(dirs["diffusion"] / "final-model"))
    ar = models.load_causal_lm(str(dirs["ar"] / "final-model"))
    length = CORPORA[args.corpus][2]
    settings = sampling.GenerationSettings(num_samples=args.num_samples, max_length=length, seed=seed)
    test_file = str(Path(args.data_dir) / CORPORA[args.corpus][1])
    table = evaluation.report(checkpoint, ar, test_file, settings=settings, seed=seed)
    diffusion_row, ar_row = table[0], table[1]
    rows, samples, seen = [], {}, set(training)
    for name, row in (("diffusion", diffusion_row), ("autoregressive", ar_row)):
        texts = [t.strip() for t in row["samples"]]
        samples[name] = texts
        novel = [t not in seen for t in texts]
        result = {"seed": seed, "model": name, "nats_per_token": row["nats_per_token"], "novel": sum(novel) / len(texts),
                  "gen_ppl": row.get("gen_ppl"),
                  "bound_ratio": diffusion_row["nats_per_token"] / ar_row["nats_per_token"] if name == "diffusion" else None}
        if pattern:
            follows = [pattern.follows(t) for t in texts]
            result["pattern"] = sum(follows) / len(texts)
            result["novel_pattern"] = sum(f and n for f, n in zip(follows, novel)) / len(texts)
        rows.append(result)
    if pattern:
        shares = controlled(checkpoint, ar, pattern, requests(pattern, args.num_requests, seed), length, seed)
        rows[0]["control"], rows[0]["control_cfg"] = shares["diffusion"]
        rows[1]["control"] = shares["autoregressive"][0]
    return rows, samples


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(SimpleCorpusArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    train_path = Path(args.data_dir) / CORPORA[args.corpus][0]
    if not train_path.is_file():
        raise UsageError(f"--data-dir {args.data_dir}: {train_path.name} not found there (minimal-text-diffusion's corpora)")
    if not args.seeds or args.max_steps < 1 or args.num_samples < 1 or args.num_requests < 1:
        raise UsageError("--seeds needs one or more seeds; --max-steps, --num-samples and --num-requests must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    training = train_path.read_text().splitlines()
    pattern = Pattern(training) if args.corpus == "simple" else None
    out = Path(args.output_dir) / args.corpus
    out.mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    for seed in args.seeds:
        seed_rows, samples = measure_seed(args, seed, out, training, pattern)
        rows += seed_rows
        lines += [f"seed {seed} {name}: {text}" for name, texts in samples.items() for text in texts[:8]]
    columns = [c for c in COLUMNS if any(row.get(c) is not None for row in rows)]
    tables.write_csv(out / "simple_corpus.csv", [{c: row.get(c) for c in columns} for row in rows], columns)
    (out / "samples.txt").write_text("\n".join(lines) + "\n")
    print(tables.markdown_table(rows, columns, lambda c, v: f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))))
    for name in ("diffusion", "autoregressive"):
        for column in columns[2:]:
            values = [row[column] for row in rows if row["model"] == name and row.get(column) is not None]
            if values:
                print(f"{name} {column}: {tables.spread(values)}")
    print(f"samples: {out / 'samples.txt'}")
    return rows


if __name__ == "__main__":
    cli.run(main)
