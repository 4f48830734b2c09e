"""How far is train.py from a bare training loop? Steady-state tokens per second of `train.py` against a plain
PyTorch loop over the same model, data, collator, optimiser and threads.

    python -m experiments.bare_loop                                    # quick-test, Tiny Shakespeare BPE, blocks of 8
    python -m experiments.bare_loop --settings quick-test --steps 60 --repeats 3

For each setting `train.py` runs as a user runs it, in its own process (its flags plus `--max-steps`, no
evaluation, no saving), and reports its steady-state step time in metrics.json (`train_step_seconds`: the median
interval between step ends after the first 5 steps, everything between steps included). The bare loop then
rebuilds that run from its run_args.json, in this process and with as many threads: the same training text and
saved tokenizer, the same initial weights (the run's seed), the collator train.py's Trainer is built with (its
training dataset in a shuffled `DataLoader` of the same batch size), AdamW with the Trainer's own settings (fused
or not), the same learning-rate schedule and gradient clipping, and the loss the diffusion Trainer computes
(`blocks.masked_logits` then `masking.loss.masked_diffusion_loss`), with no Trainer around it; its step time is
measured the same way. The two alternate (train.py, bare, train.py, bare ...) `--repeats` times; the ratio is
per pair (train.py's tokens/s over the bare loop's). Writes bare_loop.csv and .md into --output-dir.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers import TrainingArguments, get_scheduler, set_seed

from config import DataArguments, DiffusionArguments, ModelArguments
from experiments.helpers import real_corpora, tables
from textdiffusion import cli, models, training
from textdiffusion.blocks.training import masked_logits
from textdiffusion.data import documents, tokenization
from textdiffusion.masking.loss import masked_diffusion_loss

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "quick-test": ["--quick-test"],
    "shakespeare-bpe": ["--from-scratch", "--train-file", "{shakespeare_train}", "--validation-file", "{shakespeare_test}"],
    "blocks": ["--quick-test", "--block-size", "8"],
}


@dataclass
class BareLoopArguments:
    settings: list[str] = field(default_factory=lambda: list(SETTINGS), metadata={"help": f"Any of {', '.join(SETTINGS)}."})
    steps: int = field(default=40, metadata={"help": "Optimiser steps of each run (the first 5 are not timed)."})
    repeats: int = field(default=3, metadata={"help": "Pairs of runs (train.py, bare loop) per setting."})
    threads: int | None = field(default=None, metadata={"help": "torch threads of both. Default: torch's own."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the shared corpora."})
    output_dir: str = field(default="runs/bare_loop", metadata={"help": "Runs and the table."})


def run_train_py(flags: list[str], run_dir: Path, steps: int, threads: int | None) -> dict:
    """train.py FLAGS for `steps` steps without evaluating or saving; its metrics.json."""
    command = [sys.executable, "train.py", *flags, "--max-steps", str(steps), "--eval-strategy", "no", "--save-strategy", "no",
               "--logging-steps", str(steps), "--disable-tqdm", "true", "--overwrite-output-dir", "--output-dir", str(run_dir)]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log = run_dir.with_name(f"{run_dir.name}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        if subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode:
            raise cli.UsageError(f"train.py failed; see {log}")
    return json.loads((run_dir / "metrics.json").read_text())


def rebuild(run_dir: Path):
    """The run of `run_dir` (train.py's run_args.json and tokenizer/) as train.py built it, before any step:
    (model with its initial weights, the Trainer train.py would build, training arguments)."""
    saved = json.loads((run_dir / "run_args.json").read_text())
    model_args, data_args, diff_args = (kind(**saved[kind.__name__]) for kind in (ModelArguments, DataArguments, DiffusionArguments))
    given = saved["TrainingArguments"]
    training_args = TrainingArguments(**{f.name: given[f.name] for f in fields(TrainingArguments)
                                         if f.init and f.name in given and not f.name.endswith("_token")})
    tokenizer = tokenization.load_tokenizer(str(run_dir / "tokenizer"))
    train_docs, valid_docs = documents.load_documents(data_args)
    set_seed(training_args.seed)  # as training.train_tokenizer_and_build_model does: the same initial weights
    model = models.build_model(model_args.objective, model_args.model_size, tokenizer, data_args.max_length, model_args.dropout,
                               model_args.architecture, model_args.tie_word_embeddings, model_args.initializer_range)
    train_set = tokenization.tokenize_documents(tokenizer, train_docs, data_args.max_length, data_args.line_by_line)
    valid_set = tokenization.tokenize_documents(tokenizer, valid_docs, data_args.max_length, data_args.line_by_line)
    config = training.run_diffusion_config(model_args, data_args, diff_args)
    trainer = training.build_trainer(model, tokenizer, training_args, train_set, valid_set, config, diff_args)
    return model, trainer, training_args


def bare_loss(model, batch, trainer) -> torch.Tensor:
    """The diffusion Trainer's loss of `batch`, computed without the Trainer."""
    logits, targets, unit = masked_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"], trainer.block_size)
    loss, _, _ = masked_diffusion_loss(logits, targets, unit, batch["loss_weight"], batch["num_maskable"],
                                       trainer.loss_weighting, trainer.banned_ids)
    return loss


def bare_loop(model, trainer, args, steps: int) -> tuple[training.StepTimes, list[float]]:
    """Train `model` `steps` steps with a plain loop over what `trainer` holds; (its step times, its losses)."""
    model.train()
    optimizer_class, settings = trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_class(model.parameters(), **settings)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(steps), num_training_steps=steps)
    loader = trainer.get_train_dataloader()  # the Trainer's sampler and collator: the batches train.py trains on
    times, losses, batches = training.StepTimes(), [], iter(loader)
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        # The Trainer fetches a step's batch before its on_step_begin tells the collator (TrainingStep) the step.
        trainer.data_collator.training_step.step = step
        loss = bare_loss(model, batch, trainer)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        times.on_step_end(args, None, None)
    return times, losses


def run_pair(args, name: str, flags: list[str], repeat: int) -> dict:
    run_dir = Path(args.output_dir) / "runs" / f"{name}-{repeat}"
    metrics = run_train_py(flags, run_dir, args.steps, args.threads)
    model, trainer, training_args = rebuild(run_dir)
    times, _ = bare_loop(model, trainer, training_args, args.steps)
    tokens = metrics["train_tokens_per_second"] * metrics["train_step_seconds"]
    bare_seconds = times.steady_seconds()
    return {"setting": name, "repeat": repeat, "tokens_per_step": round(tokens), "train_py_tokens_s": metrics["train_tokens_per_second"],
            "bare_tokens_s": round(tokens / bare_seconds, 1), "ratio": round(bare_seconds / metrics["train_step_seconds"], 3)}


def main(argv=None):
    (args,) = cli.parse(cli.parser_for((BareLoopArguments,), __doc__.splitlines()[0]), argv)
    cli.log_to_stderr()
    if unknown := [name for name in args.settings if name not in SETTINGS]:
        raise cli.UsageError(f"--settings {unknown[0]} is unknown; choose any of {', '.join(SETTINGS)}")
    if args.steps < 8:
        raise cli.UsageError(f"--steps {args.steps} must be 8 or more (the first 5 are not timed)")
    if args.repeats < 1:
        raise cli.UsageError(f"--repeats {args.repeats} must be 1 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    paths = {}
    if "shakespeare-bpe" in args.settings:
        shakespeare_train, shakespeare_test = real_corpora.split_files("shakespeare", args.data_dir, out / "shakespeare")
        paths = {"shakespeare_train": shakespeare_train, "shakespeare_test": shakespeare_test}
    rows = []
    for name in args.settings:
        flags = [flag.format(**paths) for flag in SETTINGS[name]]
        for repeat in range(args.repeats):
            rows.append(run_pair(args, name, flags, repeat))
            print(rows[-1], flush=True)
    summary = [{"setting": name, "runs": len(mine), "train_py_tokens_s": tables.spread([r["train_py_tokens_s"] for r in mine]),
                "bare_tokens_s": tables.spread([r["bare_tokens_s"] for r in mine]),
                "train_py_over_bare": tables.spread([r["ratio"] for r in mine])}
               for name in args.settings if (mine := [r for r in rows if r["setting"] == name])]
    tables.write_csv(out / "bare_loop.csv", rows, list(rows[0]))
    table = tables.markdown_table(summary, list(summary[0]))
    (out / "bare_loop.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    cli.run(main)
