"""Measure a masked-diffusion checkpoint: its ELBO perplexity bound on held-out text, the exact perplexity of a
causal LM on the same blocks, and metrics of samples from both (judge perplexity, entropy, distinct-n, ...).

    python evaluate.py                                            # results/final-model on the built-in corpus
    python evaluate.py --ar-checkpoint results-ar/final-model --num-samples 1024
    python evaluate.py --checkpoint results/final-model --validation-file held_out.txt --max-length 128
    python evaluate.py --tasks cloze choice --ar-checkpoint results-ar/final-model   # lm-eval, offline
"""

import json
import logging
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

from config import EvaluationArguments, SamplingArguments
from textdiffusion import cli, models
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus, documents
from textdiffusion.metrics import evaluation, tables, tasks

logger = logging.getLogger(__name__)

# evaluate.py's own defaults for SamplingArguments fields: no --max-length means the length the model was trained on;
# 256 samples, so the valid share's 95% interval is about +-0.05 (and the README's figures are measured with 256).
DEFAULTS = {"num_samples": 256, "max_length": None}
HELPS = {
    "max_length": "Tokens per block of the bound and per sample. Default: the length the checkpoint was trained on.",
    "num_samples": "Samples drawn from each model for the sample metrics (0: none); on the built-in corpus the valid "
                   "share is printed with its 95%% interval, about +-0.05 at 256.",
}
DEFAULT_JUDGE = next(f.default for f in fields(EvaluationArguments) if f.name == "judge")


def parse_args(argv: list[str] | None):
    """(EvaluationArguments, SamplingArguments, whether --max-length was given)."""
    eval_args, sampling = cli.parse_args((EvaluationArguments, SamplingArguments), argv, __doc__.splitlines()[0], DEFAULTS, HELPS)
    return eval_args, sampling, sampling.max_length is not None


def check_args(eval_args, sampling) -> None:
    if eval_args.num_t_samples < 1:
        raise UsageError(f"--num-t-samples {eval_args.num_t_samples} must be at least 1")
    if eval_args.eval_batch_size < 1:
        raise UsageError(f"--eval-batch-size {eval_args.eval_batch_size} must be at least 1")
    if eval_args.max_eval_samples < 1:
        raise UsageError(f"--max-eval-samples {eval_args.max_eval_samples} must be at least 1")
    if sampling.num_samples < 0:
        raise UsageError(f"--num-samples {sampling.num_samples} must be 0 (no samples) or more")
    for spec in eval_args.tasks:
        task, path = tasks.parse_spec(spec)
        if path is not None:
            tasks.check_task_file(task, path)
        elif task in tasks.STORY_TASKS and eval_args.validation_file:
            raise UsageError(f"--tasks {task} is built from the built-in stories; leave out --validation-file, or give {task}=FILE.jsonl")
    if eval_args.mc_num < 1:
        raise UsageError(f"--mc-num {eval_args.mc_num} must be 1 or more")
    if eval_args.output_dir and Path(eval_args.output_dir).is_file():
        raise UsageError(f"--output-dir {eval_args.output_dir} is a file, not a directory")


def load_judge(eval_args, ar, device):
    """(model, tokenizer) that scores samples, or None: 'none', or the default judge that was never trained."""
    if eval_args.judge.lower() == "none":
        return None
    if ar is not None and Path(eval_args.judge).resolve() == Path(eval_args.ar_checkpoint).resolve():
        return ar
    if eval_args.judge == DEFAULT_JUDGE and not Path(DEFAULT_JUDGE).is_dir():
        logger.warning("no judge: %s does not exist (train it with train.py --quick-test --objective ar)", DEFAULT_JUDGE)
        return None
    model, tokenizer = models.load_causal_lm(eval_args.judge)
    return model.to(device).eval(), tokenizer


def run_tasks(checkpoint, docs, line_by_line, eval_args, sampling) -> list[dict]:
    """--tasks: the task files built from the held-out documents (at most --max-eval-samples passages; into
    --output-dir, or a temporary folder), scored by
    lm-eval for both models; the table printed (and written to --output-dir/tasks.json)."""
    from textdiffusion.metrics import harness

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(eval_args.output_dir or scratch) / "task_files"
        specs = dict(tasks.parse_spec(spec) for spec in eval_args.tasks)
        built = tasks.write_task_files(docs, line_by_line, folder, limit=eval_args.max_eval_samples, seed=sampling.seed,
                                       stories=not eval_args.validation_file) if None in specs.values() else {}
        files = {task: path or built[task] for task, path in specs.items()}
        rows = harness.run_tasks(checkpoint, eval_args.ar_checkpoint, files, eval_args.mc_num, sampling.seed, eval_args.eval_batch_size)
    print(harness.format_task_rows(rows))
    if eval_args.output_dir:
        with cli.atomic_path(Path(eval_args.output_dir) / "tasks.json") as path:
            path.write_text(json.dumps({"arguments": asdict(eval_args), "rows": rows}, indent=2))
    return rows


def write_outputs(directory: str, table: list[dict], eval_args, sampling) -> None:
    """metrics.json and samples.jsonl, written under temporary names and renamed when complete."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in row.items() if k != "samples"} for row in table]
    arguments = {"EvaluationArguments": asdict(eval_args), "SamplingArguments": asdict(sampling)}
    with cli.atomic_path(out / "metrics.json") as metrics, cli.atomic_path(out / "samples.jsonl") as samples:
        metrics.write_text(json.dumps({"arguments": arguments, "rows": rows}, indent=2))
        with open(samples, "w") as f:
            f.writelines(json.dumps({"model": row["model"], "text": text}) + "\n" for row in table for text in row.get("samples", []))


def main(argv: list[str] | None = None) -> list[dict]:
    eval_args, sampling, length_given = parse_args(argv)
    cli.log_to_stderr()
    check_args(eval_args, sampling)

    checkpoint = models.load_checkpoint(sampling.checkpoint, sampling.device, dtype=sampling.dtype, compile=sampling.torch_compile)
    line_by_line = checkpoint.line_by_line if eval_args.line_by_line is None else eval_args.line_by_line
    docs = evaluation.load_evaluation_documents(eval_args.validation_file, line_by_line, eval_args.max_eval_samples)
    if not length_given:  # measure on the blocks the model was trained on
        sampling.max_length = checkpoint.max_length
    if eval_args.tasks:
        return run_tasks(checkpoint, docs, line_by_line, eval_args, sampling)
    ar = None
    if eval_args.ar_checkpoint:
        ar_model, ar_tokenizer = models.load_causal_lm(eval_args.ar_checkpoint)
        ar = ar_model.to(checkpoint.device).eval(), ar_tokenizer
    judge = load_judge(eval_args, ar, checkpoint.device)
    if sampling.num_samples > 0:
        sampling.check(checkpoint.max_positions)

    training_stories = corpus.generate_corpus(documents.BUILTIN_TRAIN_STORIES) if eval_args.validation_file is None else None
    table = evaluation.report(
        checkpoint, ar, docs, max_length=sampling.max_length, line_by_line=line_by_line,
        num_t_samples=eval_args.num_t_samples, max_documents=eval_args.max_eval_samples,
        settings=sampling if sampling.num_samples > 0 else None, judge=judge, training_stories=training_stories,
        seed=sampling.seed, batch_size=eval_args.eval_batch_size,
    )
    print(tables.format_table(table))
    if eval_args.output_dir:
        write_outputs(eval_args.output_dir, table, eval_args, sampling)
    return table


if __name__ == "__main__":
    cli.run(main)
