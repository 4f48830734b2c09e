"""Train a masked-diffusion language model (or the matched GPT-2 baseline) with the HF Trainer.

    python train.py --quick-test                      # tiny model, built-in corpus, a few minutes on a CPU
    python train.py --train-file my.txt --from-scratch --model-size small
    python train.py --model-name-or-path distilroberta-base   # fine-tune from the hub (wikitext by default)
"""

import json
import logging
import math
import shutil
import signal
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch
from transformers import (
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import get_available_reporting_integrations
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
from transformers.modeling_outputs import MaskedLMOutput
from transformers.trainer_utils import get_last_checkpoint

from config import (
    PRESET_HELP,
    PRESETS,
    QUICK_TEST,
    TRAINING_ALIASES,
    TRAINING_DEFAULTS,
    TRAINING_HELP,
    DataArguments,
    DiffusionArguments,
    ModelArguments,
    RunArguments,
)
from textdiffusion import blocks, cli, models
from textdiffusion.cli import UsageError
from textdiffusion.data import documents, tokenization
from textdiffusion.masking.collator import EVAL_TIMES, DiffusionCollator
from textdiffusion.masking.loss import masked_diffusion_loss
from textdiffusion.metrics import tables

logger = logging.getLogger(__name__)

NUM_LEVELS = 10  # loss is logged per mask-rate bucket (0, 0.1], (0.1, 0.2], ... (0.9, 1.0]
LEVEL_NAMES = [f"{(i + 1) / NUM_LEVELS:.1f}" for i in range(NUM_LEVELS)]
ARGUMENT_TYPES = (ModelArguments, DataArguments, DiffusionArguments, RunArguments, TrainingArguments)


def build_parser(defaults: dict | None = None, add_help: bool = True) -> cli.ArgumentParser:
    """train.py's parser: every option of config.py's dataclasses and the Trainer's, the seed project's aliases,
    `defaults` (field -> value); --help shows the Trainer options of config.TRAINING_HELP, --help-all all of them."""
    hidden = {f.name for f in fields(TrainingArguments)} - set(TRAINING_HELP)
    parser = cli.parser_for(ARGUMENT_TYPES, __doc__.splitlines()[0], defaults=defaults, helps=TRAINING_HELP, epilog=PRESET_HELP,
                            aliases=TRAINING_ALIASES, hidden=hidden, add_help=add_help)
    # A bare --resume-from-checkpoint means the newest checkpoint in --output-dir.
    resume = next(action for action in parser._actions if action.dest == "resume_from_checkpoint")
    resume.nargs, resume.const = "?", "last"
    return parser


def resolved_defaults(given: dict) -> dict:
    """train.py's defaults for the options `given` (field -> value, as cli.given reads them): TRAINING_DEFAULTS, then
    the preset for how the model starts, then --quick-test's settings (each later one wins); the user's own flags
    beat them all."""
    quick_test = given.get("quick_test", False)
    from_scratch = given.get("from_scratch", quick_test)
    defaults = {**TRAINING_DEFAULTS, **PRESETS["from-scratch" if from_scratch else "fine-tuning"], **(QUICK_TEST if quick_test else {})}
    if given.get("block_size") is not None:
        # Block diffusion feeds each position twice (noisy and clean) and needs positions that are indices:
        # DeBERTa's relative positions are computed from the sequence index, so its blocks would see false distances.
        # RoBERTa, not ModernBERT: on the built-in stories (quick-test, blocks of 8, three seeds each) ModernBERT did
        # not learn to copy the opening's words and RoBERTa did (RESULTS.md, "Block diffusion").
        defaults["architecture"] = "roberta"
    # The AR baseline gets its own default directory so it never replaces the diffusion model in results/.
    if given.get("objective") == "ar":
        defaults["output_dir"] = "results-ar"
    if quick_test and "output_dir" not in given and earlier_quick_test(Path(defaults["output_dir"])):
        # The one directory train.py replaces unasked: the quick-test's own, holding an earlier quick-test.
        defaults["overwrite_output_dir"] = True
    return defaults


def earlier_quick_test(out: Path) -> bool:
    """Whether `out` holds a run of train.py --quick-test: its run_args.json (train.py writes it) says so."""
    try:
        return json.loads((out / "run_args.json").read_text())["RunArguments"]["quick_test"] is True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def parse_args(argv: list[str] | None):
    """Two passes of one parser: the first learns which options are given (--quick-test, --from-scratch, --objective,
    --block-size, --output-dir), the second parses with the defaults they choose."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = cli.given(build_parser(add_help=False), argv)
    parsed = cli.parse(build_parser(resolved_defaults(given)), argv)
    model_args = parsed[0]
    if model_args.from_scratch and "model_name_or_path" in given:
        raise UsageError(
            f"--from-scratch builds a new model, so --model-name-or-path {model_args.model_name_or_path} would be "
            "ignored; drop one of the two"
        )
    return parsed


def check_args(model_args, data_args, diff_args, run_args, training_args) -> None:
    if model_args.initializer_range is not None and not model_args.initializer_range > 0:
        raise UsageError(f"--initializer-range {model_args.initializer_range} must be > 0")
    if training_args.seed < 0:
        raise UsageError(f"--seed {training_args.seed} must be 0 or more")
    if data_args.max_length < 8:
        raise UsageError(f"--max-length {data_args.max_length} is too short; use at least 8")
    if diff_args.prefix_length < 0 or diff_args.prefix_length >= data_args.max_length:
        raise UsageError(f"--prefix-length {diff_args.prefix_length} must be in [0, --max-length {data_args.max_length})")
    if not 0 < diff_args.min_mask_time < diff_args.max_mask_time <= 1:
        raise UsageError(
            f"--min-mask-time {diff_args.min_mask_time} and --max-mask-time {diff_args.max_mask_time} must satisfy "
            "0 < min < max <= 1"
        )
    if not 0 <= diff_args.repeat_mask_share <= 1:
        raise UsageError(f"--repeat-mask-share {diff_args.repeat_mask_share} must be in [0, 1]")
    if diff_args.repeat_mask_steps < 0:
        raise UsageError(f"--repeat-mask-steps {diff_args.repeat_mask_steps} must be 0 or more")
    if diff_args.block_size is not None:
        if model_args.objective == "ar":
            raise UsageError(f"--block-size {diff_args.block_size} trains block diffusion; it does not apply to --objective ar")
        if not 1 <= diff_args.block_size <= data_args.max_length or data_args.max_length % diff_args.block_size:
            raise UsageError(
                f"--block-size {diff_args.block_size} must be between 1 and --max-length {data_args.max_length} and divide it"
            )
    if diff_args.mask_curriculum_steps < 0:
        raise UsageError(f"--mask-curriculum-steps {diff_args.mask_curriculum_steps} must be 0 or more")
    check_report_to(training_args)
    if data_args.train_file and not Path(data_args.train_file).is_file():
        raise UsageError(f"--train-file not found: {data_args.train_file}")
    out = Path(training_args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {out} is a file, not a directory")
    resume = training_args.resume_from_checkpoint
    if resume and resume != "last" and not Path(resume).is_dir():
        raise UsageError(f"--resume-from-checkpoint {resume}: no such checkpoint directory")
    if resume == "last" and (not out.is_dir() or get_last_checkpoint(str(out)) is None):
        raise UsageError(f"--resume-from-checkpoint: no checkpoint-* directory in {out} to resume from")
    if out.is_dir() and any(out.iterdir()) and not (run_args.overwrite_output_dir or resume):
        raise UsageError(
            f"--output-dir {out} is not empty; pass --overwrite-output-dir to replace it or "
            "--resume-from-checkpoint to continue it"
        )


def check_report_to(training_args) -> None:
    """--report-to takes one name or a comma-separated list ("tensorboard,wandb"); each must be an integration the
    Trainer knows and whose package is installed. The list is stored back, split."""
    names = [name.strip() for entry in training_args.report_to or [] for name in str(entry).split(",") if name.strip()]
    if names in (["none"], ["all"]):
        return
    available = get_available_reporting_integrations()
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise UsageError(f"--report-to {name} is unknown; choose none, all or any of {', '.join(INTEGRATION_TO_CALLBACK)}")
        if name not in available:
            raise UsageError(f"--report-to {name}: its package is not installed (pip install -e '.[tracking]' for tensorboard and wandb)")
    training_args.report_to = names


# ----------------------------------------------------------------------------- the trainer


class DiffusionTrainer(Trainer):
    """Masked-diffusion loss, loss per mask level in the logs, fixed-level evaluation with the ELBO bound."""

    def __init__(self, *args, loss_weighting: str = "uniform", banned_ids=(), eval_collator=None, block_size=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_weighting = loss_weighting
        self.block_size = block_size
        self.banned_ids = torch.tensor(sorted(banned_ids), dtype=torch.long)
        self.eval_collator = eval_collator
        # Our loss is a mean over this rank's tokens: let the Trainer divide it by the accumulation steps and
        # never rescale it by the number of processes.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._levels = {True: torch.zeros(3, NUM_LEVELS, dtype=torch.float64), False: torch.zeros(3, NUM_LEVELS, dtype=torch.float64)}

    def get_eval_dataloader(self, eval_dataset=None):
        collator = self.data_collator
        self.data_collator = self.eval_collator or collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        weight = inputs.pop("loss_weight")
        num_maskable = inputs.pop("num_maskable")
        rate = inputs.pop("mask_rate")
        inputs.pop("mask_time")
        # One unit per row, or per block (noisy half only): each unit's masked tokens weighted by its own time.
        # The LM head only at the masked positions (the loss reads no others).
        logits, targets, unit = blocks.masked_logits(model, inputs["input_ids"], inputs["attention_mask"], labels, self.block_size)
        outputs = MaskedLMOutput(logits=logits)  # (masked positions, vocab): evaluation reads only the loss
        loss, ce_sum, count = masked_diffusion_loss(logits, targets, unit, weight, num_maskable, self.loss_weighting, self.banned_ids)
        # The logged bound weights a row by m'(t) / (share masked), exactly as likelihood.elbo_bound does.
        self._accumulate(model.training, rate, ce_sum, count, weight.to(ce_sum.dtype) * ce_sum, num_maskable)
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, training, rate, ce_sum, count, weighted, num_maskable):
        # Rows 0/1: cross-entropy sum and masked-token count per level; row 2 holds the ELBO sums in 0/1.
        with torch.no_grad():
            level = (torch.ceil(rate * NUM_LEVELS).long() - 1).clamp(0, NUM_LEVELS - 1).cpu()
            stats = self._levels[training]
            stats[0].index_add_(0, level, ce_sum.detach().double().cpu())
            stats[1].index_add_(0, level, count.double().cpu())
            stats[2, 0] += weighted.detach().double().sum().cpu()
            stats[2, 1] += num_maskable.double().sum().cpu()

    def evaluate(self, *args, **kwargs):
        if self.eval_collator is not None:
            self.eval_collator.reset()
        self._levels[False].zero_()
        return super().evaluate(*args, **kwargs)

    def log(self, logs: dict, start_time=None) -> None:
        evaluation = any(key.startswith("eval_") for key in logs)
        training = "loss" in logs
        if evaluation or training:
            stats = self._levels[not evaluation]
            prefix = "eval_" if evaluation else ""
            sums = self._all_reduce(stats.clone())
            for i, name in enumerate(LEVEL_NAMES):
                if sums[1, i] > 0:
                    logs[f"{prefix}loss_mask_{name}"] = round(float(sums[0, i] / sums[1, i]), 4)
            if evaluation and sums[2, 1] > 0:
                bound = float(sums[2, 0] / sums[2, 1])
                logs["eval_elbo"] = round(bound, 4)
                logs["eval_ppl_bound"] = round(math.exp(min(bound, 50.0)), 3)
            stats.zero_()
        super().log(logs, start_time)

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            device = self.args.device
            stats = stats.to(device)
            torch.distributed.all_reduce(stats)
            stats = stats.cpu()
        return stats


class TellsCollatorTheStep(TrainerCallback):
    """The mask-rate curriculum depends on the training step; the collator runs in this process (no workers)."""

    def __init__(self, collator):
        self.collator = collator

    def on_step_begin(self, args, state, control, **kwargs):
        self.collator.step = state.global_step


class StopOnSignal(TrainerCallback):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, stop. The run resumes from it."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.signal = signum
        logger.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal is not None:
            control.should_save = True
            control.should_training_stop = True


# ----------------------------------------------------------------------------- building blocks


def load_pretrained(model_args, data_args):
    """(model, tokenizer) of a hub name or local checkpoint, checked before any data is read."""
    load = models.load_causal_lm if model_args.objective == "ar" else models.load_masked_lm
    model, tokenizer = load(model_args.model_name_or_path, model_args.trust_remote_code)
    if data_args.max_length > models.max_positions(model):
        raise UsageError(
            f"--max-length {data_args.max_length} is larger than {model_args.model_name_or_path} allows "
            f"({models.max_positions(model)} positions)"
        )
    return model, tokenizer


def train_tokenizer_and_build_model(model_args, data_args, training_args, train_docs):
    # The tokenizer is trained once per output directory, so a resumed run keeps the same vocabulary.
    saved = Path(training_args.output_dir) / "tokenizer"
    if training_args.resume_from_checkpoint and saved.is_dir():
        tokenizer = tokenization.load_tokenizer(str(saved))
    else:
        logger.info("training a %s tokenizer (vocab <= %d)", model_args.tokenizer_type, model_args.vocab_size)
        tokenizer = tokenization.train_tokenizer(train_docs, model_args.tokenizer_type, model_args.vocab_size)
        if training_args.process_index == 0:
            tokenizer.save_pretrained(saved)
    # The Trainer seeds only when it is created, after the model exists: seed here so the initial weights, and
    # with them the whole run, are the same for the same --seed.
    set_seed(training_args.seed)
    model = models.build_model(
        model_args.objective, model_args.model_size, tokenizer, data_args.max_length, model_args.dropout,
        model_args.architecture, model_args.tie_word_embeddings, model_args.initializer_range,
    )
    return model, tokenizer


def diffusion_settings(model_args, data_args, diff_args) -> dict:
    return {
        "objective": model_args.objective,
        "mask_rates": diff_args.mask_rates,
        "schedule": diff_args.schedule,
        "loss_weighting": diff_args.loss_weighting,
        "prefix_length": diff_args.prefix_length,
        "prefix_policy": diff_args.prefix_policy,
        "line_by_line": data_args.line_by_line,
        "max_length": data_args.max_length,
        "corpus": data_args.train_file or data_args.dataset_name,
        "block_size": block_size(diff_args, data_args),
    }


def block_size(diff_args, data_args) -> int | None:
    """The block size of block diffusion; None for ordinary masked diffusion (no --block-size, or the whole row)."""
    size = diff_args.block_size
    return None if size is None or size == data_args.max_length else size


def save_final_model(trainer, directory: Path, settings: dict) -> None:
    """Write model, tokenizer and diffusion_config.json elsewhere, then rename: never a half-written model."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # safetensors + tokenizer (the Trainer's processing_class)
    models.save_diffusion_config(str(tmp), settings)
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def plot_loss_by_level(log_history: list[dict], path: Path) -> None:
    plt = tables.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, prefix, title in ((axes[0], "", "training"), (axes[1], "eval_", "evaluation (fixed levels, fixed seed)")):
        for name in LEVEL_NAMES:
            points = [(e["step"], e[f"{prefix}loss_mask_{name}"]) for e in log_history if f"{prefix}loss_mask_{name}" in e]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=f"mask <= {name}")
        ax.set(title=f"Loss per mask level, {title}", xlabel="step", ylabel="cross-entropy of masked tokens")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # a run too short to log has no training points
        axes[0].legend(fontsize=7, ncol=2)
    tables.save_figure(fig, path, layout="tight")


def prepare_output_dir(run_args, training_args) -> None:
    """Create --output-dir; when this run replaces the one there, remove its checkpoints (a later
    --resume-from-checkpoint would take them for this run's) and say so in one line. Nothing else is deleted."""
    out = Path(training_args.output_dir)
    if run_args.overwrite_output_dir and not training_args.resume_from_checkpoint and out.is_dir() and any(out.iterdir()):
        old = sorted(out.glob("checkpoint-*"), key=lambda path: path.name.split("-")[-1].zfill(12))
        replaced = [path.name for path in old] + (["final-model (at the end)"] if (out / "final-model").exists() else [])
        logger.warning("replacing the earlier %s in %s: %s; other files stay", "quick-test" if earlier_quick_test(out) else "run",
                       out, ", ".join(replaced) or "no checkpoint or model")
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
    if training_args.resume_from_checkpoint == "last":
        training_args.resume_from_checkpoint = get_last_checkpoint(str(out))
    out.mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, diff_args, run_args, training_args = parse_args(argv)
    cli.log_to_stderr()
    check_args(model_args, data_args, diff_args, run_args, training_args)
    logger.info("process %d of world size %d on %s", training_args.process_index, training_args.world_size, training_args.device)
    if training_args.world_size > 1 and torch.distributed.is_initialized():
        # Every rank checks that --output-dir is empty; without this wait, rank 0 could already have written into it
        # (a CI run saw rank 1 refuse the directory rank 0 had just filled).
        torch.distributed.barrier()
    out = Path(training_args.output_dir)

    pretrained = None if model_args.from_scratch else load_pretrained(model_args, data_args)
    train_docs, valid_docs = documents.load_documents(data_args)
    model, tokenizer = pretrained or train_tokenizer_and_build_model(model_args, data_args, training_args, train_docs)
    blocks_of = block_size(diff_args, data_args) if model_args.objective == "diffusion" else None
    if blocks_of:
        blocks.check_model(model, blocks_of, data_args.max_length)
    train_set = tokenization.tokenize_documents(tokenizer, train_docs, data_args.max_length, data_args.line_by_line, "tokenize train")
    valid_set = tokenization.tokenize_documents(tokenizer, valid_docs, data_args.max_length, data_args.line_by_line, "tokenize valid")
    logger.info("%d training / %d validation sequences of %d tokens", len(train_set), len(valid_set), data_args.max_length)

    prepare_output_dir(run_args, training_args)
    if training_args.process_index == 0:
        run_args_dict = {t.__name__: asdict(a) for t, a in zip(ARGUMENT_TYPES[:-1], (model_args, data_args, diff_args, run_args))}
        run_args_dict["TrainingArguments"] = training_args.to_dict()
        # Results depend on the thread count too: float sums are ordered differently with more threads.
        run_args_dict["run"] = {"preset": "from-scratch" if model_args.from_scratch else "fine-tuning",
                                "torch_threads": torch.get_num_threads()}
        (out / "run_args.json").write_text(json.dumps(run_args_dict, indent=2, default=str))

    stop = StopOnSignal()
    common = dict(model=model, args=training_args, train_dataset=train_set, eval_dataset=valid_set, processing_class=tokenizer, callbacks=[stop])
    if model_args.objective == "ar":
        trainer = Trainer(**common, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    else:
        collator_args = dict(
            tokenizer=tokenizer, schedule=diff_args.schedule, prefix_length=diff_args.prefix_length,
            prefix_policy=diff_args.prefix_policy, line_by_line=data_args.line_by_line, block_size=blocks_of,
        )
        collator = DiffusionCollator(
            mask_rates=diff_args.mask_rates, min_mask_time=diff_args.min_mask_time, max_mask_time=diff_args.max_mask_time,
            time_sampling=diff_args.time_sampling, curriculum_steps=diff_args.mask_curriculum_steps,
            repeat_mask_share=diff_args.repeat_mask_share, repeat_mask_steps=diff_args.repeat_mask_steps,
            repeat_mask_direction=diff_args.repeat_mask_direction,
            common_token_ids=DiffusionCollator.common_tokens(train_set["input_ids"])
            if diff_args.repeat_mask_share or diff_args.repeat_mask_steps else (),
            **collator_args,
        )
        common["callbacks"].append(TellsCollatorTheStep(collator))
        trainer = DiffusionTrainer(
            **common,
            data_collator=collator,
            eval_collator=DiffusionCollator(eval_times=EVAL_TIMES, seed=training_args.seed, **collator_args),
            loss_weighting=diff_args.loss_weighting,
            block_size=blocks_of,
            banned_ids={tokenizer.mask_token_id, tokenizer.pad_token_id, tokenization.start_token_id(tokenizer)},
        )

    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if stop.signal is not None:
        logger.warning("stopped by %s at step %d; resume with --resume-from-checkpoint", signal.Signals(stop.signal).name, trainer.state.global_step)
        sys.exit(128 + stop.signal)
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        save_final_model(trainer, out / "final-model", diffusion_settings(model_args, data_args, diff_args))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        trainer.save_state()  # OUTPUT_DIR/trainer_state.json: the whole log history and the final step
        if model_args.objective == "diffusion":
            plot_loss_by_level(trainer.state.log_history, out / "loss_by_mask_level.png")
        logger.info("final model written to %s", out / "final-model")
    return metrics


if __name__ == "__main__":
    cli.run(main)
