"""Diffusion vs the matched GPT-2 on a real corpus: both trained the same way, then measured the same way.

    python -m experiments.benchmark --dataset shakespeare                  # Tiny Shakespeare, 90/10 split
    python -m experiments.benchmark --dataset wikitext2                    # train wiki.valid.raw, test wiki.test.raw
    python -m experiments.benchmark --dataset shakespeare-char             # characters, nanoGPT's CPU configuration
    python -m experiments.benchmark --dataset shakespeare --name elbo --loss-weighting elbo   # one recipe variant
    python -m experiments.benchmark --dataset shakespeare-char --guide-weights 0.3 0.6   # + AR-guided diffusion rows

Both models get the same tokenizer (trained on the same training text with the same settings), the same width
and depth, the same blocks, batch and steps, so they see the same training tokens. Blocks, batch, steps, warm-up and
tokenizer default per dataset (experiments/real_corpora.py); flags given here win. Reported, from one run:
held-out perplexity (the diffusion model's ELBO bound vs GPT-2's exact perplexity, same tokens), and for the
diffusion sampler (threshold decoding, and L/4 fixed steps in random order, or --fixed-steps / --fixed-strategy) and GPT-2 with its KV cache: latency of one sample
(batch 1), throughput at batch 16, and the metrics of the batch-16 samples (judge perplexity under the AR model,
unigram entropy, distinct-n, repetition). Checkpoints are reused when they exist (--retrain to train again); recipe variants (--name) with the same
GPT-2 settings share one GPT-2 run. Writes benchmark.json and benchmark.csv into runs/benchmark/<dataset>/<name>/.
"""

import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from experiments.helpers import real_corpora, tables, training_runs
from textdiffusion import cli, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.metrics import evaluation, text_metrics

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchmarkArguments:
    dataset: str = field(
        default="shakespeare",
        metadata={"choices": tuple(real_corpora.DATASETS),
                  "help": " ".join(f"{name}: {corpus.description}." for name, corpus in real_corpora.DATASETS.items())},
    )
    data_dir: str = field(
        default="../shared/data", metadata={"help": "Folder holding tinyshakespeare/, wikitext-2-raw/ and warandpeace/."}
    )
    name: str = field(default="default", metadata={"help": "Name of this recipe: results go to <output-root>/<dataset>/<name>."})
    output_root: str = field(default="runs/benchmark", metadata={"help": "Where the runs are written."})
    model_size: str = field(default="tiny", metadata={"help": "tiny, small or base (both models)."})
    architecture: str = field(
        default="modernbert",
        metadata={"help": "Diffusion recipe: the masked LM built from scratch (train.py --architecture). GPT-2 is GPT-2."},
    )
    tokenizer_type: str | None = field(
        default=None,
        metadata={"choices": ("bpe", "word", "char"), "help": "The shared tokenizer (train.py --tokenizer-type). " + real_corpora.default_help("tokenizer_type")},
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per block, in training, evaluation and sampling. " + real_corpora.default_help("max_length")}
    )
    vocab_size: int = field(default=4000, metadata={"help": "Largest vocabulary of the shared tokenizer."})
    batch_size: int | None = field(default=None, metadata={"help": "Training batch (both models). " + real_corpora.default_help("batch_size")})
    max_steps: int | None = field(default=None, metadata={"help": "Training steps (both models). " + real_corpora.default_help("max_steps")})
    ar_steps: int | None = field(
        default=None, metadata={"help": "GPT-2's training steps, when they differ from the diffusion model's --max-steps: a GPT-2 "
                                "that overfits a small text trained shorter, the early-stopped baseline (RESULTS.md, 'Diffusion vs GPT-2 on real text, over training length')."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the diffusion model."})
    ar_learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate of GPT-2. Default: --learning-rate."})
    warmup_steps: int | None = field(
        default=None, metadata={"help": "Linear warm-up steps (both models). " + real_corpora.default_help("warmup_steps")}
    )
    loss_weighting: str = field(default="elbo", metadata={"help": "Diffusion recipe: uniform or elbo (train.py --loss-weighting)."})
    mask_rates: str = field(default="continuous", metadata={"help": "Diffusion recipe: discrete or continuous."})
    schedule: str = field(default="linear", metadata={"help": "Diffusion recipe: the training noise schedule."})
    block_size: int | None = field(
        default=None, metadata={"help": "Diffusion recipe: block diffusion with blocks of this many tokens (train.py --block-size); "
                                "sampled block by block with its key/value cache. Default: ordinary masked diffusion."}
    )
    fixed_steps: list[int] = field(
        default_factory=list, metadata={"help": "Passes of the fixed-step sampler, one row each (the second and more after "
                                        "GPT-2's row). Default: a quarter of the tokens."}
    )
    fixed_strategy: str = field(
        default="adaptive", metadata={"choices": ("adaptive", "random", "confidence", "remdm", "entropy-bounded", "remask"),
                                      "help": "Strategy of the fixed-step rows (generate.py --strategy; adaptive is its default "
                                      "for a model of running text in BPE tokens, confidence for one of characters)."}
    )
    num_t_samples: int = field(default=8, metadata={"help": "Times t per held-out block in the ELBO bound."})
    num_samples: int = field(default=16, metadata={"help": "Samples per model for the sample metrics (one batch)."})
    latency_repeats: int = field(default=3, metadata={"help": "Batch-1 samples timed per sampler (the median is reported)."})
    retrain: bool = field(default=False, metadata={"help": "Train again even when the checkpoints exist."})
    train_only: bool = field(
        default=False, metadata={"help": "Only train (e.g. two datasets at once); measure later, alone on the machine, without it."}
    )
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads for the measurements (training too)."})
    parallel_training: bool = field(
        default=False, metadata={"help": "Train the diffusion model and GPT-2 at the same time, two processes of --threads "
                                 "threads each (on 2 cores with --threads 1: the cell's training in about the time of the slower model)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of training, the bound and sampling."})
    guide_weights: list[float] = field(
        default_factory=list, metadata={"help": "Also sample the diffusion model guided by the GPT-2 at each of these weights "
                                        "(generate.py --guide --guide-weight W, threshold decoding): AR-guided diffusion."}
    )

    def __post_init__(self):
        if self.dataset not in real_corpora.DATASETS:
            raise UsageError(f"--dataset {self.dataset} is unknown; choose one of {', '.join(real_corpora.DATASETS)}")
        for key, value in real_corpora.DATASETS[self.dataset].defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)


# What the diffusion run in <output-root>/<dataset>/<name> was trained with: a reused checkpoint must match it.
RECIPE = ("dataset", "tokenizer_type", "model_size", "architecture", "max_length", "vocab_size", "batch_size", "max_steps",
          "learning_rate", "warmup_steps", "loss_weighting", "mask_rates", "schedule", "block_size", "seed")


def check_recipe(args, out: Path) -> None:
    """Refuse to reuse a run folder trained with other settings; record this run's settings in recipe.json."""
    recipe = {key: getattr(args, key) for key in RECIPE}
    path = out / "recipe.json"
    if path.is_file() and not args.retrain:
        saved = json.loads(path.read_text())
        changed = [f"--{key.replace('_', '-')} {saved.get(key)} there, {value} here" for key, value in recipe.items() if saved.get(key) != value]
        if changed:
            raise UsageError(f"{out} holds a run with other settings ({'; '.join(changed)}); use another --name, or --retrain")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=2))


def train(args, objective: str, train_file: Path, test_file: Path, directory: Path) -> float:
    """Run train.py for one model (skipped when its final model exists); returns the seconds it took."""
    if (directory / "final-model" / "config.json").is_file() and not args.retrain:
        logger.info("reusing %s", directory / "final-model")
        return float("nan")
    lr = args.learning_rate if objective == "diffusion" else (args.ar_learning_rate or args.learning_rate)
    steps = args.max_steps if objective == "diffusion" else training_runs.ar_training_steps(asdict(args))
    command = [
        sys.executable, "train.py", "--objective", objective, "--from-scratch", "--model-size", args.model_size,
        "--train-file", str(train_file), "--validation-file", str(test_file),
        "--tokenizer-type", args.tokenizer_type, "--max-length", str(args.max_length), "--vocab-size", str(args.vocab_size),
        "--dropout", "0",
        "--batch-size", str(args.batch_size), "--max-steps", str(steps), "--learning-rate", str(lr),
        "--warmup-steps", str(args.warmup_steps), "--lr-scheduler-type", "cosine", "--seed", str(args.seed),
        "--eval-steps", str(10 * steps), "--save-steps", str(10 * steps),
        "--output-dir", str(directory), "--overwrite-output-dir",
    ]
    if objective == "diffusion":
        command += ["--architecture", args.architecture, "--loss-weighting", args.loss_weighting, "--mask-rates", args.mask_rates, "--schedule", args.schedule]
        command += ["--block-size", str(args.block_size)] if args.block_size else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    logger.info("training %s: %s", objective, " ".join(command[1:]))
    began = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    log_path, lock = directory / "train.log", directory / "training.lock"
    try:  # two benchmark runs (two recipes, say) may share one GPT-2 folder: only one of them trains it
        lock.open("x").close()
    except FileExistsError:
        raise UsageError(f"another run is training {directory} (delete {lock} if it died); run this one when it is done") from None
    try:
        with open(log_path, "w") as log:
            code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        lock.unlink()
    if code != 0:
        raise UsageError(f"training the {objective} model failed (exit {code}); see {log_path}")
    return time.perf_counter() - began


def sampler_args(args, strategy: str, steps: int | None, batch: int, seed: int, guide: str | None = None,
                 guide_weight: float = 0.0) -> sampling.GenerationSettings:
    return sampling.GenerationSettings(
        max_length=args.max_length, num_samples=batch, steps=steps, strategy=strategy, schedule="cosine", seed=seed,
        **({"guide": guide, "guide_weight": guide_weight} if guide else {}),
    )


def measure_sampler(args, run, judge) -> dict:
    """Latency (median of batch-1 runs after a warm-up), batch throughput and sample metrics of
    `run(batch, seed) -> (texts, seconds, forward passes)`."""
    run(1, 99)  # warm-up
    latency = [run(1, args.seed + i) for i in range(args.latency_repeats)]
    texts, seconds, passes = run(args.num_samples, args.seed)
    return {
        "batch1_seconds": statistics.median(s for _, s, _ in latency),
        "batch1_passes": statistics.median(p for _, _, p in latency),
        f"batch{args.num_samples}_seconds": seconds,
        f"batch{args.num_samples}_passes": passes,
        "samples_per_s": args.num_samples / seconds,
        **text_metrics.sample_metrics(texts, judge),
        "samples": texts,
    }


def diffusion_run(args, checkpoint: models.Checkpoint, strategy: str, steps: int | None, guide: str | None = None,
                  guide_weight: float = 0.0):
    def run(batch, seed):
        out = sampling.generate(checkpoint, sampler_args(args, strategy, steps, batch, seed, guide, guide_weight), progress=False)
        return out.texts, out.seconds, out.nfe

    return run


def ar_run(args, model, tokenizer):
    def run(batch, seed):
        out = sampling.sample_autoregressive(model, tokenizer, sampler_args(args, "threshold", None, batch, seed))
        return out.texts, out.seconds, out.forward_passes

    return run


def ar_directory(args) -> Path:
    """GPT-2's run folder: shared by every recipe --name with the same AR settings, so it is trained once."""
    return training_runs.ar_run_folder(args.output_root, asdict(args))


def measure(args, out: Path, test_file: Path) -> dict:
    diff_dir, ar_dir = out / "diffusion" / "final-model", ar_directory(args) / "final-model"
    checkpoint = models.load_checkpoint(str(diff_dir))
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    ar, ar_tokenizer = models.load_causal_lm(str(ar_dir))
    ar = ar.to(checkpoint.device).eval()
    with torch.no_grad():
        likelihood = evaluation.report(
            checkpoint, (ar, ar_tokenizer), str(test_file), max_length=args.max_length,
            line_by_line=False, num_t_samples=args.num_t_samples, max_documents=None, seed=args.seed,
        )
    bound, exact = likelihood[0], likelihood[1]
    judge = (ar, ar_tokenizer)
    fixed_steps, *more_steps = args.fixed_steps or [args.max_length // 4]
    fixed = args.fixed_strategy
    rows = [
        {"model": "diffusion, threshold 0.9", "ppl": bound["ppl"], "nats_per_token": bound["nats_per_token"],
         **measure_sampler(args, diffusion_run(args, checkpoint, "threshold", None), judge)},
        {"model": f"diffusion, {fixed}, {fixed_steps} steps", "ppl": bound["ppl"], "nats_per_token": bound["nats_per_token"],
         **measure_sampler(args, diffusion_run(args, checkpoint, fixed, fixed_steps), judge)},
        {"model": "GPT-2, KV cache", "ppl": exact["ppl"], "nats_per_token": exact["nats_per_token"],
         **measure_sampler(args, ar_run(args, ar, ar_tokenizer), judge)},
        # after GPT-2's row: summary() reads the first three rows by position
        *({"model": f"diffusion, {fixed}, {steps} steps", **measure_sampler(args, diffusion_run(args, checkpoint, fixed, steps), judge)}
          for steps in more_steps),
        *({"model": f"diffusion, threshold 0.9, guided by GPT-2 ({weight:g})",
           **measure_sampler(args, diffusion_run(args, checkpoint, "threshold", None, str(ar_dir), weight), judge)}
          for weight in args.guide_weights),
    ]
    held_out = evaluation.held_out_texts(tokenizer, test_file, args.max_length, args.num_samples)
    rows.append({"model": "held-out text", **text_metrics.sample_metrics(held_out, judge)})
    parameters = {"diffusion": sum(p.numel() for p in model.parameters()), "ar": sum(p.numel() for p in ar.parameters())}
    return {"bound_tokens": bound["tokens"], "same_tokens": bound.get("same_tokens"), "parameters": parameters, "rows": rows}


COLUMNS = ["model", "ppl", "nats_per_token", "batch1_seconds", "batch1_passes", "samples_per_s", "gen_ppl", "entropy",
           "distinct_2", "repetition"]


def markdown(rows: list[dict]) -> str:
    def cell(column, value):
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return "-" if value is None or isinstance(value, float) else str(value)

    return tables.markdown_table(rows, COLUMNS, cell)


def summary(rows: list[dict]) -> dict:
    threshold, fixed, ar = rows[0], rows[1], rows[2]
    out = {"bound_over_ar_ppl": threshold["ppl"] / ar["ppl"], "bound_over_ar_nats": threshold["nats_per_token"] / ar["nats_per_token"]}
    guided = [(f"guided_{row['model'].rsplit('(', 1)[1].rstrip(')')}", row) for row in rows[3:] if "guided" in row["model"]]
    for key, row in (("threshold", threshold), ("fixed_steps", fixed), *guided):
        out[f"{key}_latency_speedup_vs_ar"] = ar["batch1_seconds"] / row["batch1_seconds"]
        out[f"{key}_throughput_vs_ar"] = row["samples_per_s"] / ar["samples_per_s"]
        out[f"{key}_gen_ppl_ratio"] = row["gen_ppl"] / ar["gen_ppl"] if "gen_ppl" in row else float("nan")
        out[f"{key}_entropy_ratio"] = row["entropy"] / ar["entropy"]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(BenchmarkArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.max_steps < 1 or args.num_samples < 1 or args.latency_repeats < 1:
        raise UsageError("--max-steps, --num-samples and --latency-repeats must be at least 1")
    if args.ar_steps is not None and args.ar_steps < 1:
        raise UsageError(f"--ar-steps {args.ar_steps} must be at least 1 (or left out: GPT-2 trains for --max-steps)")
    if args.block_size is not None and not (1 <= args.block_size <= args.max_length and args.max_length % args.block_size == 0):
        raise UsageError(f"--block-size {args.block_size} must be between 1 and --max-length {args.max_length} and divide it")
    if any(steps < 1 for steps in args.fixed_steps):
        raise UsageError(f"--fixed-steps {args.fixed_steps}: each must be at least 1")
    if any(not 0 <= weight <= 1 for weight in args.guide_weights):
        raise UsageError(f"--guide-weights {args.guide_weights}: each weight must be in [0, 1]")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_root) / args.dataset / args.name
    train_file, test_file = real_corpora.split_files(args.dataset, args.data_dir, out)
    check_recipe(args, out)
    directories = {"diffusion": out / "diffusion", "ar": ar_directory(args)}
    if args.parallel_training:  # train() waits on a subprocess, so two threads run the two trainings side by side
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {objective: pool.submit(train, args, objective, train_file, test_file, folder)
                       for objective, folder in directories.items()}
            seconds = {objective: future.result() for objective, future in futures.items()}
    else:
        seconds = {objective: train(args, objective, train_file, test_file, folder) for objective, folder in directories.items()}
    if args.train_only:
        return {"train_seconds": seconds}
    result = measure(args, out, test_file)
    result.update(arguments=asdict(args), train_seconds=seconds, summary=summary(result["rows"]))
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    tables.write_csv(out / "benchmark.csv", [{c: row.get(c) for c in COLUMNS} for row in result["rows"]], COLUMNS)
    print(f"{args.dataset} / {args.name}: {args.model_size}, {args.tokenizer_type}, {args.max_steps} steps (GPT-2: {training_runs.ar_training_steps(asdict(args))}) x {args.batch_size} x {args.max_length} tokens, "
          f"lr {args.learning_rate}, {args.architecture}, {args.loss_weighting} weighting, {args.mask_rates} rates, "
          f"{'blocks of ' + str(args.block_size) if args.block_size else 'no blocks'}; "
          f"{result['bound_tokens']} held-out tokens (same tokens for both: {result['same_tokens']}); "
          f"parameters: diffusion ({args.architecture}) {result['parameters']['diffusion']:,}, GPT-2 {result['parameters']['ar']:,}")
    print(markdown(result["rows"]))
    print(json.dumps(result["summary"], indent=1))
    return result


if __name__ == "__main__":
    cli.run(main)
