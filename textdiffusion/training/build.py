"""Building a run from its settings: the model and tokenizer, the diffusion config it will be saved with, and the
Trainer with its collators.

The functions read the argument dataclasses of train.py by attribute (as `data.documents.load_documents` does):
`model_args` (objective, model_name_or_path, trust_remote_code, tokenizer_type, vocab_size, model_size, dropout,
architecture, tie_word_embeddings, initializer_range), `data_args` (max_length, line_by_line, train_file,
dataset_name) and `diff_args` (the masking options of `masking.DiffusionCollator`).
"""

import itertools
import logging
from pathlib import Path

from transformers import DataCollatorForLanguageModeling, Trainer, set_seed

from textdiffusion.data import tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.masking.forward import filler_positions
from textdiffusion.models.build import build_model
from textdiffusion.models.checkpoint import load_causal_lm, load_masked_lm
from textdiffusion.models.diffusion_config import DiffusionConfig
from textdiffusion.models.heads import max_positions
from textdiffusion.training.callbacks import TrainingStep
from textdiffusion.training.trainer import DiffusionTrainer

logger = logging.getLogger(__name__)


def load_pretrained(model_args, max_length: int, seed: int):
    """(model, tokenizer) of a hub name or local checkpoint, checked before any data is read. Seeded first: the
    weights the checkpoint lacks (a missing MLM head) are drawn at load, so the same seed gives the same run."""
    set_seed(seed)
    load = load_causal_lm if model_args.objective == "ar" else load_masked_lm
    model, tokenizer = load(model_args.model_name_or_path, model_args.trust_remote_code)
    if max_length > max_positions(model):
        raise SettingsError(
            f"max_length {max_length} is larger than {model_args.model_name_or_path} allows "
            f"({max_positions(model)} positions)"
        )
    return model, tokenizer


def train_tokenizer_and_build_model(model_args, data_args, training_args, train_docs):
    """(model, tokenizer) of a new model: a tokenizer trained on `train_docs` (saved in OUTPUT_DIR/tokenizer) and a
    model built from a config, seeded by training_args.seed."""
    # The tokenizer is trained once per output directory, so a resumed run keeps the same vocabulary.
    saved = Path(training_args.output_dir) / "tokenizer"
    if training_args.resume_from_checkpoint and saved.is_dir():
        tokenizer = tokenization.load_tokenizer(str(saved))
    else:
        logger.info("training a %s tokenizer (vocab <= %d)", model_args.tokenizer_type, model_args.vocab_size)
        tokenizer = tokenization.train_tokenizer(train_docs, model_args.tokenizer_type, model_args.vocab_size)
        if training_args.process_index == 0:
            tokenizer.save_pretrained(saved)
            tokenization.make_tokenizer_config_portable(saved)
            # How often training used each piece: a prompt of pieces it rarely saw gets a warning when sampling.
            tokenization.save_piece_counts(tokenizer, train_docs, saved)
    # The Trainer seeds only when it is created, after the model exists: seed here so the initial weights, and
    # with them the whole run, are the same for the same seed.
    set_seed(training_args.seed)
    model = build_model(
        model_args.objective, model_args.model_size, tokenizer, data_args.max_length, model_args.dropout,
        model_args.architecture, model_args.tie_word_embeddings, model_args.initializer_range,
    )
    return model, tokenizer


def run_diffusion_config(model_args, data_args, diff_args) -> DiffusionConfig:
    """What diffusion_config.json will say about this run. The block size is None for ordinary masked diffusion
    (no block size, or blocks as long as the row)."""
    size = diff_args.block_size
    return DiffusionConfig(
        objective=model_args.objective,
        mask_rates=diff_args.mask_rates,
        schedule=diff_args.schedule,
        loss_weighting=diff_args.loss_weighting,
        prefix_length=diff_args.prefix_length,
        prefix_policy=diff_args.prefix_policy,
        line_by_line=data_args.line_by_line,
        max_length=data_args.max_length,
        corpus=data_args.train_file or data_args.dataset_name,
        block_size=None if size is None or size == data_args.max_length else size,
    )


def leading_rows(rows, count: int = 100_000) -> list[list[int]]:
    """The `input_ids` of the first `count` rows of a dataset, streamed or not."""
    if hasattr(rows, "__len__"):
        return rows[: min(count, len(rows))]["input_ids"]
    return [row["input_ids"] for row in itertools.islice(rows, count)]


class CausalCollator:
    """GPT-2's batches: the HF causal-LM collator, and on line-by-line rows the end tokens that fill a row after its
    document's own end are no targets (GPT-2 stops at the end token), so its loss is per document token, as the
    diffusion bound is."""

    def __init__(self, tokenizer, line_by_line: bool):
        self.causal = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        self.end_id = tokenization.end_token_id(tokenizer)
        self.line_by_line = line_by_line

    def __call__(self, examples):
        batch = self.causal(examples)
        if self.line_by_line:
            batch["labels"] = batch["labels"].masked_fill(filler_positions(batch["input_ids"], self.end_id), -100)
        return batch


def build_trainer(model, tokenizer, training_args, train_set, valid_set, config: DiffusionConfig, diff_args,
                  callbacks=()) -> Trainer:
    """The run's Trainer: for the GPT-2 baseline the HF Trainer with a causal-LM collator; for diffusion a
    DiffusionTrainer whose training collator draws times as `diff_args` asks (reading the step from a
    TrainingStep callback) and whose evaluation draws unbiased times, seeded with training_args.seed."""
    common = {"model": model, "args": training_args, "train_dataset": train_set, "eval_dataset": valid_set,
              "processing_class": tokenizer, "callbacks": list(callbacks)}
    if config.objective == "ar":
        return Trainer(**common, data_collator=CausalCollator(tokenizer, config.line_by_line))
    layout = {
        "tokenizer": tokenizer, "schedule": config.schedule, "prefix_length": config.prefix_length,
        "prefix_policy": config.prefix_policy, "line_by_line": config.line_by_line, "block_size": config.block_size,
    }
    repeats = diff_args.repeat_mask_share or diff_args.repeat_mask_steps
    step = TrainingStep()
    collator = DiffusionCollator(
        mask_rates=config.mask_rates, min_mask_time=diff_args.min_mask_time, max_mask_time=diff_args.max_mask_time,
        time_sampling=diff_args.time_sampling, curriculum_steps=diff_args.mask_curriculum_steps,
        repeat_mask_share=diff_args.repeat_mask_share, repeat_mask_steps=diff_args.repeat_mask_steps,
        repeat_mask_direction=diff_args.repeat_mask_direction,
        common_token_ids=DiffusionCollator.common_tokens(leading_rows(train_set)) if repeats else (),
        training_step=step, **layout,
    )
    common["callbacks"].append(step)
    return DiffusionTrainer(
        **common,
        data_collator=collator,
        eval_collator=DiffusionCollator(evaluation=True, seed=training_args.seed, **layout),
        loss_weighting=config.loss_weighting,
        block_size=config.block_size,
        new_weights_learning_rate=diff_args.new_weights_learning_rate,
        banned_ids={tokenizer.mask_token_id, tokenizer.pad_token_id, tokenization.start_token_id(tokenizer)},
    )
