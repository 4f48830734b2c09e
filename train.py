"""Train a masked-diffusion language model (or the matched GPT-2 baseline) with the HF Trainer.

    python train.py --quick-test                      # tiny model, built-in corpus, a few minutes on a CPU
    python train.py --train-file my.txt --from-scratch --model-size small
    python train.py --model-name-or-path distilroberta-base   # fine-tune from the hub (wikitext by default)
"""

import json
import logging
import shutil
import signal
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.integrations import get_available_reporting_integrations
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import is_torch_bf16_gpu_available

from config import (
    PRESET_HELP,
    PRESETS,
    QUICK_TEST,
    STREAM_SHUFFLE_BUFFER,
    TRAINING_ALIASES,
    TRAINING_DEFAULTS,
    TRAINING_HELP,
    DataArguments,
    DiffusionArguments,
    ModelArguments,
    RunArguments,
)
from textdiffusion import blocks, cli, training
from textdiffusion.cli import UsageError
from textdiffusion.data import documents, tokenization
from textdiffusion.models import compilation, lora, precision

logger = logging.getLogger(__name__)

ARGUMENT_TYPES = (ModelArguments, DataArguments, DiffusionArguments, RunArguments, TrainingArguments)


def build_parser(defaults: dict | None = None, add_help: bool = True) -> cli.ArgumentParser:
    """train.py's parser: every option of config.py's dataclasses and the Trainer's, the seed project's aliases,
    `defaults` (field -> value); --help shows the Trainer options of config.TRAINING_HELP, --help-all all of them."""
    hidden = {f.name for f in fields(TrainingArguments)} - set(TRAINING_HELP) | {"preprocessing_num_workers"}
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
    defaults["architecture"] = default_architecture(given, defaults)
    evaluation = given.get("eval_strategy", defaults["eval_strategy"])
    if given.get("eval_strategy") == "epoch" and "save_strategy" not in given:
        defaults["save_strategy"] = "epoch"
    if evaluation == "no" or given.get("save_strategy", defaults.get("save_strategy", "steps")) not in (evaluation, "best"):
        # Nothing evaluated, nothing saved, or not at the same moments: there is no best checkpoint to keep.
        defaults["load_best_model_at_end"] = False
    if "eval_steps" in given and "save_steps" not in given:
        defaults["save_steps"] = given["eval_steps"]  # the best checkpoint needs one saved at every evaluation
    # The AR baseline gets its own default directory so it never replaces the diffusion model in results/.
    if given.get("objective") == "ar":
        defaults["output_dir"] = "results-ar"
    if given.get("bf16") and not torch.cuda.is_available() and not is_torch_bf16_gpu_available():
        # No GPU: --bf16 means this CPU (TrainingArguments refuses bf16 without a GPU unless told --use-cpu).
        defaults["use_cpu"] = "true"
    if quick_test and "output_dir" not in given and earlier_quick_test(Path(defaults["output_dir"])):
        # The one directory train.py replaces unasked: the quick-test's own, holding an earlier quick-test.
        defaults["overwrite_output_dir"] = True
    return defaults


def default_architecture(given: dict, defaults: dict) -> str:
    """The masked LM built from scratch when --architecture is not given, chosen from the data's layout.

    Block diffusion feeds each position twice (noisy and clean) and needs positions that are indices: DeBERTa's
    relative positions are computed from the sequence index, so its blocks would see false distances; RoBERTa, not
    ModernBERT, because on the built-in stories (blocks of 8, three seeds) ModernBERT did not learn to copy the
    opening's words. Line by line (short documents, the built-in stories): DeBERTa, the quick-test's by measurement.
    Packed text: ModernBERT; DeBERTa stayed on the unigram plateau of Tiny Shakespeare at 1500 steps (RESULTS.md,
    "Defaults on real text")."""
    if given.get("block_size") is not None:
        return "roberta"
    line_by_line = given.get("line_by_line", str(defaults.get("line_by_line", "false")).lower() == "true")
    return "deberta" if line_by_line else "modernbert"


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
    if data_args.streaming and training_args.max_steps <= 0:
        raise UsageError("--streaming reads the text as it trains, so its length is unknown: give --max-steps N")
    if data_args.preprocessing_num_workers is not None and data_args.preprocessing_num_workers < 1:
        raise UsageError(f"--preprocessing-num-workers {data_args.preprocessing_num_workers} must be 1 or more")
    check_report_to(training_args)
    check_lora_args(model_args, run_args)
    check_precision(training_args)
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


def check_precision(training_args) -> None:
    """--fp16 needs a CUDA GPU, --bf16 a device torch can autocast to bfloat16 (this CPU, often), --torch-compile a
    compiler that works here (models.compilation.compile_problem: a C++ compiler on a CPU, triton on a GPU)."""
    device = training_args.device
    bf16 = precision.supports(device, "bfloat16")
    if training_args.fp16 and device.type != "cuda":
        instead = "use --bf16 (this CPU can) or neither" if bf16 else "train without it"
        raise UsageError(f"--fp16 needs a CUDA GPU and this run is on {device.type}; {instead}")
    if training_args.bf16 and not bf16:
        instead = "; use --fp16 or neither" if device.type == "cuda" else "; train without --bf16"
        raise UsageError(f"--bf16: torch cannot autocast to bfloat16 on this {device.type}{instead}")
    backend = training_args.torch_compile_backend or "inductor"
    if training_args.torch_compile and (problem := compilation.compile_problem(device, backend)):
        raise UsageError(f"--torch-compile: torch.compile ({backend}) does not work on {device.type} here: {problem}; "
                         "run without --torch-compile")


def check_lora_args(model_args, run_args) -> None:
    """--lora-r R adapts a pretrained checkpoint: R >= 1 with valid --lora-* settings, or 0 (off) with none of them.
    The target modules are stored back split at commas."""
    r = model_args.lora_r
    if r < 0:
        raise UsageError(f"--lora-r {r} must be 0 (LoRA off) or a rank of at least 1")
    if r == 0:
        others = {"--lora-alpha": model_args.lora_alpha, "--lora-dropout": model_args.lora_dropout or None,
                  "--lora-target-modules": " ".join(model_args.lora_target_modules or []) or None}
        for flag, value in others.items():
            if value is not None:
                raise UsageError(f"{flag} {value} has no effect with --lora-r 0 (LoRA off); add --lora-r R (R >= 1) or drop it")
        return
    if run_args.quick_test or model_args.from_scratch:
        preset = "--quick-test" if run_args.quick_test else "--from-scratch"
        raise UsageError(f"--lora-r {r} adapts a pretrained checkpoint, but {preset} builds a new model, which is trained "
                         f"in full; drop --lora-r or {preset}")
    if model_args.lora_alpha is not None and not model_args.lora_alpha > 0:
        raise UsageError(f"--lora-alpha {model_args.lora_alpha} must be > 0")
    if not 0 <= model_args.lora_dropout < 1:
        raise UsageError(f"--lora-dropout {model_args.lora_dropout} must be in [0, 1)")
    if model_args.lora_target_modules is not None:
        names = [name.strip() for entry in model_args.lora_target_modules for name in entry.split(",") if name.strip()]
        if not names:
            raise UsageError("--lora-target-modules names no module; give layer names such as query value, or leave it out")
        model_args.lora_target_modules = names


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


def write_run_args(out: Path, model_args, data_args, diff_args, run_args, training_args) -> None:
    """OUTPUT_DIR/run_args.json: every resolved argument of the run, its preset and its thread count."""
    run_args_dict = {t.__name__: asdict(a) for t, a in zip(ARGUMENT_TYPES[:-1], (model_args, data_args, diff_args, run_args))}
    run_args_dict["TrainingArguments"] = training_args.to_dict()
    # Results depend on the thread count too: float sums are ordered differently with more threads.
    run_args_dict["run"] = {"preset": "from-scratch" if model_args.from_scratch else "fine-tuning",
                            "torch_threads": torch.get_num_threads()}
    (out / "run_args.json").write_text(json.dumps(run_args_dict, indent=2, default=str))


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, diff_args, run_args, training_args = parse_args(argv)
    cli.log_to_stderr()
    check_args(model_args, data_args, diff_args, run_args, training_args)
    # --push-to-hub: the repository now (a missing token shows before training), final-model at the end.
    hub_repo = training.create_hub_repo(training_args) if training_args.push_to_hub and training_args.process_index == 0 else None
    logger.info("process %d of world size %d on %s", training_args.process_index, training_args.world_size, training_args.device)
    if training_args.world_size > 1 and torch.distributed.is_initialized():
        # Every rank checks that --output-dir is empty; without this wait, rank 0 could already have written into it
        # (a CI run saw rank 1 refuse the directory rank 0 had just filled).
        torch.distributed.barrier()
    out = Path(training_args.output_dir)

    if model_args.from_scratch and model_args.objective == "diffusion" and "architecture" not in cli.given(
            build_parser(add_help=False), sys.argv[1:] if argv is None else argv):
        logger.info("architecture %s, the from-scratch default for %s (--architecture to choose)", model_args.architecture,
                    "blocks" if diff_args.block_size else "line-by-line text" if data_args.line_by_line else "packed text")
    config = training.run_diffusion_config(model_args, data_args, diff_args)
    pretrained = None if model_args.from_scratch else training.load_pretrained(model_args, data_args.max_length, training_args.seed)
    started = time.perf_counter()
    train_docs, valid_docs = documents.load_documents(data_args, data_args.streaming)
    if data_args.streaming and not pretrained:
        logger.info("--streaming: the tokenizer learns from the first %s characters of the training text", f"{documents.TOKENIZER_SAMPLE_CHARS:,}")
    model, tokenizer = pretrained or training.train_tokenizer_and_build_model(
        model_args, data_args, training_args, documents.leading_text(train_docs) if data_args.streaming else train_docs)
    if config.objective == "diffusion" and config.block_size:
        blocks.check_model(model, config.block_size, config.max_length)
    # LoRA: the adapters go into `model` itself, which the Trainer trains; `adapted`, peft's view of it, saves it.
    adapted = lora.add_adapters(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                                model_args.lora_target_modules, seed=training_args.seed) if model_args.lora_r else None
    workers = data_args.preprocessing_num_workers
    train_set = tokenization.tokenize_documents(tokenizer, train_docs, data_args.max_length, data_args.line_by_line, "tokenize train", workers)
    valid_set = tokenization.tokenize_documents(tokenizer, valid_docs, data_args.max_length, data_args.line_by_line, "tokenize valid", workers)
    if data_args.streaming:
        train_set = train_set.shuffle(seed=training_args.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    logger.info("%s training / %d validation sequences of %d tokens (data ready in %.1f s)",
                "streamed" if data_args.streaming else len(train_set), len(valid_set), data_args.max_length,
                time.perf_counter() - started)

    prepare_output_dir(run_args, training_args)
    if training_args.process_index == 0:
        write_run_args(out, model_args, data_args, diff_args, run_args, training_args)
    stop, step_times = training.StopOnSignal(), training.StepTimes()
    training_args.push_to_hub = False  # the Trainer's push would upload OUTPUT_DIR at every save; we push final-model
    trainer = training.build_trainer(model, tokenizer, training_args, train_set, valid_set, config, diff_args,
                                     callbacks=[stop, step_times, training.CheckpointCards(config, out)])
    with compilation.compile_errors("--torch-compile"):  # a failure at the first compiled pass: one line
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if stop.signal is not None:
        logger.warning("stopped by %s at step %d; resume with --resume-from-checkpoint", signal.Signals(stop.signal).name, trainer.state.global_step)
        sys.exit(128 + stop.signal)
    metrics = trainer.evaluate()
    if (seconds := step_times.steady_seconds()) is not None:
        # Throughput a user can compare across runs and machines: steady-state steps, every position of a row counted.
        metrics["train_step_seconds"] = round(seconds, 5)
        rows = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
        metrics["train_tokens_per_second"] = round(rows * data_args.max_length / seconds, 1)
    if trainer.is_world_process_zero():
        metrics = training.save_run(trainer, out, config, metrics, hub_model_id=hub_repo, adapted=adapted)
        if hub_repo:
            training.push_final_model(out / training.FINAL_MODEL, hub_repo, training_args)
        if warning := training.plateau_warning(metrics):
            logger.warning(warning)
    return metrics


if __name__ == "__main__":
    cli.run(main)
