"""Every option of the toolkit: dataclasses whose `help` metadata becomes `--help`.

`transformers.HfArgumentParser` turns each field into `--field_name` and `--field-name`; `aliases` keep the
seed project's flag names working (TRAINING_ALIASES for the Trainer's fields). Presets (`--quick-test`, the
optimiser settings by how the model starts) are defaults of train.py's parser: a first pass over the same flags
says which apply, so they are applied in exactly one place and anything the user types still wins.
"""

from dataclasses import dataclass, field
from typing import Literal

from textdiffusion.models.precision import DTYPE_CHOICES
from textdiffusion.sampling.settings import SCHEDULE_CHOICES, GenerationSettings


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="distilroberta-base",
        metadata={
            "help": "Masked-LM checkpoint to fine-tune: a hub name (roberta-base, answerdotai/ModernBERT-base, ...) or a "
            "local directory. Ignored with --from-scratch.",
            "aliases": ["--model-name"],
        },
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Build a new model from a config and train a tokenizer on the training text."}
    )
    model_size: Literal["tiny", "small", "base"] = field(
        default="tiny", metadata={"help": "Size of the model built with --from-scratch (see models.MODEL_SIZES)."}
    )
    architecture: Literal["roberta", "roberta-prelayernorm", "modernbert", "deberta"] | None = field(
        default=None,
        metadata={"help": "Masked LM built with --from-scratch: roberta (post-LN, like BERT), roberta-prelayernorm (pre-LN), "
                  "modernbert (pre-LN, rotary positions) or deberta (relative-position attention). Default, chosen from the "
                  "data: modernbert for packed text, deberta with --line-by-line, roberta with --block-size."},
    )
    tokenizer_type: Literal["bpe", "word", "char"] = field(
        default="bpe", metadata={"help": "Tokenizer trained with --from-scratch: byte-level BPE, word-level or characters."}
    )
    vocab_size: int = field(default=8000, metadata={"help": "Largest vocabulary of the tokenizer trained with --from-scratch."})
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout of a model built with --from-scratch (a pretrained checkpoint keeps its own)."}
    )
    initializer_range: float | None = field(
        default=None,
        metadata={"help": "Standard deviation of the initial weights of a model built with --from-scratch. Default: the "
                  "architecture's own (0.02, tuned for width 768)."},
    )
    tie_word_embeddings: bool = field(
        default=True, metadata={"help": "A model built with --from-scratch shares its input embeddings with its output layer."}
    )
    objective: Literal["diffusion", "ar"] = field(
        default="diffusion",
        metadata={"help": "diffusion: a masked LM trained to unmask. ar: the matched GPT-2 baseline (same size, data, tokenizer)."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow a hub checkpoint to run its own modelling code. Off by default for safety."}
    )
    lora_r: int = field(
        default=0,
        metadata={"help": "LoRA rank (peft; a pretrained checkpoint only): adapters on the encoder's linear layers, the LM "
                  "head trained in full. 0: off. final-model/ holds the merged model, final-model/adapter/ the adapter."},
    )
    lora_alpha: float | None = field(
        default=None, metadata={"help": "LoRA scale: the adapters' update is multiplied by alpha / r. Default: 2 * --lora-r."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the input of each LoRA adapter, in [0, 1)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Linear layers of the encoder that get LoRA adapters, by name or dotted suffix (query value, or "
                  "attention.self.query), space- or comma-separated. Default: every linear layer of the encoder."},
    )


STREAM_SHUFFLE_BUFFER = 10_000  # sequences --streaming shuffles among


@dataclass
class DataArguments:
    train_file: str | None = field(default=None, metadata={"help": "Local training text: .txt, or .jsonl with a 'text' field."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation text (.txt or .jsonl)."})
    dataset_name: str = field(
        default="wikitext",
        metadata={"help": "Hub dataset used when no --train-file is given; 'builtin' is the story corpus that ships with the "
                  "project (variable layout), 'builtin-fixed' its older fixed-layout stories."},
    )
    dataset_config: str | None = field(default="wikitext-2-raw-v1", metadata={"help": "Configuration of --dataset-name."})
    line_by_line: bool = field(
        default=False,
        metadata={
            "help": "One document per non-empty line, filled to --max-length with end tokens. Default: "
            "documents packed into blocks."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per training sequence (and the model's positions when built from scratch)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many training documents."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep at most this many validation documents."})
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Percent of the training text held out with no validation set."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the training text while training (big corpora); "
                  "needs --max-steps."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes that tokenize the text (datasets' num_proc). Default: one."}
    )


@dataclass
class DiffusionArguments:
    mask_rates: Literal["discrete", "continuous"] = field(
        default="continuous",
        metadata={
            "help": "discrete: one mask rate per batch from {0.1, ..., 1.0} (the seed project). continuous: a time t "
            "per example, antithetic over the batch, masked share = schedule(t)."
        },
    )
    schedule: SCHEDULE_CHOICES = field(
        default="linear", metadata={"help": "Noise schedule m(t) mapping time to masked share; the sampler uses the same table."}
    )
    loss_weighting: Literal["uniform", "elbo"] = field(
        default="uniform",
        metadata={"help": "uniform: mean cross-entropy over masked tokens. elbo: MDLM's bound, each row's masked cross-entropy "
                  "weighted m'(t) / (share really masked)."},
    )
    prefix_length: int = field(default=0, metadata={"help": "Leading tokens kept visible (never masked) in each training sequence."})
    prefix_policy: Literal["fixed", "random"] = field(
        default="fixed",
        metadata={"help": "fixed: exactly --prefix-length visible tokens. random: a length drawn per example from 0..--prefix-length."},
    )
    min_mask_time: float = field(default=1e-3, metadata={"help": "Smallest time t drawn in continuous mode."})
    max_mask_time: float = field(
        default=1.0, metadata={"help": "Largest time t drawn in continuous mode: t lies in [--min-mask-time, --max-mask-time]."}
    )
    time_sampling: Literal["uniform", "bell"] = field(
        default="uniform",
        metadata={"help": "How times t are spread over that window: uniform, or bell-shaped (Beta(2, 2): more middle "
                  "mask rates)."},
    )
    repeat_mask_share: float = field(
        default=0.0,
        metadata={"help": "Share of training rows masked for copying (every uncommon token that repeats an earlier one, "
                  "plus 15%% of the rest) instead of at a drawn rate. 0: off."},
    )
    repeat_mask_steps: int = field(
        default=0,
        metadata={"help": "Copying warm-up: every training row is masked for copying (see --repeat-mask-share) during the "
                  "first N steps. 0: none."},
    )
    repeat_mask_direction: Literal["forward", "both"] = field(
        default="forward",
        metadata={"help": "Copy rows: forward hides the later mentions of a repeated word and keeps the first; both hides "
                  "the first mentions instead in half of them."},
    )
    block_size: int | None = field(
        default=None,
        metadata={"help": "Block diffusion (BD3-LM): denoise blocks of this many tokens given the clean blocks before them "
                  "(sampled block by block with a key/value cache). Must divide --max-length. From scratch, --architecture "
                  "then defaults to roberta."},
    )
    mask_curriculum_steps: int = field(
        default=0,
        metadata={"help": "Curriculum: over the first N steps the largest time drawn grows from 20%% of the window to "
                  "--max-mask-time. 0: none."},
    )
    new_weights_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the weights a pretrained checkpoint lacks (random at loading: an MLM head)."},
    )


@dataclass
class RunArguments:
    quick_test: bool = field(
        default=False,
        metadata={"help": "Preset: a tiny model from scratch on the built-in stories, offline, ~3 min on 2 cores; "
                  "replaces an earlier quick-test."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into a non-empty --output-dir: its checkpoints are removed (the log names them), "
                  "other files stay."},
    )


@dataclass
class SamplingArguments(GenerationSettings):
    """The generation settings (sampling.GenerationSettings: prompt, length, count, sampler, seed) plus where the
    model is and what to print or write."""

    checkpoint: str = field(
        default="results/final-model",
        metadata={"help": "Diffusion checkpoint directory (written by train.py).", "aliases": ["--roberta-checkpoint"]},
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... Default: cuda when available."})
    dtype: DTYPE_CHOICES | None = field(
        default=None,
        metadata={"help": "Precision of the model's forward passes (autocast; the weights stay float32): bfloat16 on a "
                  "CPU that torch can autocast to it or a GPU, float16 on a CUDA GPU only. Default: bfloat16 on a GPU, "
                  "float32 on a CPU."},
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model's encoder with torch.compile (inductor) before sampling: the first pass "
                  "waits for the compiler, the later ones are faster. Needs a C++ compiler on a CPU, triton on a GPU."},
    )
    hide_steps: bool = field(default=False, metadata={"help": "Print only the final texts, not the text emerging step by step."})
    output: str | None = field(
        default=None,
        metadata={"help": "Also write the samples to this .jsonl file: one object per sample with text, prefix, steps, nfe, "
        "seconds and the settings."},
    )


# Defaults that differ from TrainingArguments' own, whatever the model; the user's arguments come after and win.
TRAINING_DEFAULTS = {
    "output_dir": "results",
    "report_to": "none",
    "per_device_train_batch_size": "32",
    "per_device_eval_batch_size": "64",
    "num_train_epochs": "3",
    "eval_strategy": "steps",
    "eval_steps": "500",
    "save_steps": "500",
    "save_total_limit": "2",
    "logging_steps": "50",
    "prediction_loss_only": "true",
    "remove_unused_columns": "false",
    # transformers 5 multiplies the loss by the world size for models whose forward takes **kwargs unless this
    # is off; our loss is already a per-token mean on each rank.
    "average_tokens_across_devices": "false",
    # final-model is the checkpoint with the lowest held-out loss, not the last one: a small corpus seen for many
    # epochs overfits (a GPT-2 on 680 KB of text went from 5.21 at step 500 to 7.83 at 1500).
    "load_best_model_at_end": "true",
    "metric_for_best_model": "eval_loss",
}

# Optimiser defaults by how the model starts. A pretrained checkpoint wants a small learning rate (fine-tuning);
# a model built from a config learns almost nothing at that rate in a few thousand steps and needs a large one
# with a short warm-up (chosen by experiments/recipe_grid.py on the built-in stories; on real text see RESULTS.md, "Defaults on real text"). train.py applies the one
# that fits (--from-scratch or not) after TRAINING_DEFAULTS and before --quick-test and the user's own flags, for
# the diffusion model and the GPT-2 baseline alike, so a comparison stays fair.
PRESETS = {
    "fine-tuning": {
        "learning_rate": "5e-5",
        "warmup_steps": "0",
        "lr_scheduler_type": "linear",
        # The weights the checkpoint lacks (MiniLM's MLM head transform) start at random: they learn at the
        # from-scratch rate. MiniLM on TinyStories, 150 steps: held-out bound 5.31 nats/token against 6.03 with
        # everything at 5e-5 (RESULTS.md, "Pretrained checkpoints").
        "new_weights_learning_rate": "2e-3",
    },
    "from-scratch": {
        "learning_rate": "2e-3",
        # 300, not 50: at 50, Tiny Shakespeare's default seed left the unigram plateau late (bound 292 against 157
        # and 168 on two other seeds); at 300 the three seeds end at 171 / 152 / 154 (RESULTS.md, "Defaults on real text").
        "warmup_steps": "300",
        "lr_scheduler_type": "cosine",
    },
}

# A tiny model from scratch on the built-in corpus: offline, about three minutes on 2 CPU cores. The optimiser
# settings come from PRESETS["from-scratch"], but for the warm-up.
QUICK_TEST = {
    "from_scratch": "true",
    "model_size": "tiny",
    "dataset_name": "builtin",
    "line_by_line": "true",
    "max_length": "48",
    "max_train_samples": "20000",
    "max_eval_samples": "320",
    "vocab_size": "1000",
    "mask_rates": "continuous",
    # Copying warm-up and untied embeddings: without both, this model never learned to repeat the opening's words
    # (RESULTS.md, "Why a copying warm-up and untied embeddings"). No visible prefix in training (the default): with
    # 0-8 visible leading tokens it generated the opening badly. 300 warm-up steps, not 150: with 150 one seed of
    # five did not copy the person (both measured on earlier quick-tests; git history of RESULTS.md).
    "repeat_mask_steps": "300",
    "tie_word_embeddings": "false",
    # The quick-test's recipe was measured with 50 warm-up steps (8 seeds); 300 is the from-scratch default for
    # real text.
    "warmup_steps": "50",
    "per_device_train_batch_size": "32",
    # 1500 steps, not 1200: held-out loss 0.599 against 0.62-0.65, valid 0.855 against 0.754 on the default seed
    # (RESULTS.md, "Does it learn the quick-test corpus?"); about 2.5-3 min on 2 cores.
    "max_steps": "1500",
    "eval_steps": "500",
    "save_steps": "500",
    "logging_steps": "100",
}

PRESET_HELP = (
    "Defaults by how the model starts: with --from-scratch the from-scratch preset "
    + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in PRESETS["from-scratch"].items())
    + f" (--quick-test: --warmup-steps {QUICK_TEST['warmup_steps']}); otherwise (fine-tuning a checkpoint) "
    + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in PRESETS["fine-tuning"].items())
    + ". Flags you give always win; run_args.json records the resolved values and the preset used."
)

# The seed project's flag names for TrainingArguments fields (flag -> field).
TRAINING_ALIASES = {
    "--epochs": "num_train_epochs",
    "--batch-size": "per_device_train_batch_size",
    "--batch_size": "per_device_train_batch_size",
}

# The Trainer options train.py --help shows, with a help of one line (field -> help); --help-all shows the
# Trainer's other ~100 in its own words, and every one of them parses either way.
TRAINING_HELP = {
    "output_dir": "Where checkpoints, final-model/, run_args.json, metrics.json and plots go.",
    "resume_from_checkpoint": "Continue a run: a checkpoint directory, or no value for the newest in --output-dir.",
    "learning_rate": "Peak learning rate of AdamW.",
    "lr_scheduler_type": "Learning-rate schedule after the warm-up (linear, cosine, constant, ...).",
    "warmup_steps": "Steps of linear learning-rate warm-up.",
    "weight_decay": "AdamW weight decay.",
    "per_device_train_batch_size": "Training sequences per batch on each device.",
    "gradient_accumulation_steps": "Batches whose gradients are summed before each optimiser step.",
    "max_steps": "Optimiser steps to train; overrides --num-train-epochs when > 0.",
    "num_train_epochs": "Passes over the training set (when --max-steps is not given).",
    "bf16": "Train in bfloat16 mixed precision (GPUs, recent CPUs).",
    "fp16": "Train in float16 mixed precision (CUDA).",
    "logging_steps": "Log the training loss (per mask level) every N steps.",
    "eval_strategy": "When to evaluate: no, steps (every --eval-steps) or epoch.",
    "eval_steps": "Evaluate at the ten fixed mask levels every N steps.",
    "save_steps": "Save a checkpoint every N steps.",
    "save_total_limit": "Keep at most this many checkpoints (the oldest are removed).",
    "report_to": "Where the logs go as well: none, all, tensorboard, wandb, or a comma-separated list.",
    "seed": "Random seed (weights, data order, masks): the same seed gives the same losses.",
    "push_to_hub": "Upload final-model and its model card to the hub at the end.",
    "hub_model_id": "Repository of --push-to-hub (user/name); default: the --output-dir name.",
}


@dataclass
class VisualizationArguments:
    output_dir: str = field(
        default="results/visualization",
        metadata={"help": "Directory for frames/, text_diffusion_animation.gif, run.json, run.js and view_animation.html."},
    )
    fps: float = field(default=1.25, metadata={"help": "Denoising steps shown per second in the GIF (1.25 = 800 ms a step)."})
    hold: float = field(default=2.0, metadata={"help": "Seconds the first and the last frame stay on screen."})
    open: bool = field(default=False, metadata={"help": "Open the viewer in the default web browser when done."})
    frames_sample: int = field(
        default=0,
        metadata={"help": "Which sample (0 = the first) the frames and the GIF draw; the viewer holds every sample and starts on this one."},
    )


@dataclass
class CompareArguments:
    gpt2_checkpoint: str = field(
        default="results-ar/final-model",
        metadata={"help": "Autoregressive baseline: a local directory (train.py --objective ar) or a hub name such as gpt2."},
    )
    # The GIF path is SamplingArguments.output (--output), which compare_models.py defaults to
    # results/comparison/comparison.gif.
    clock: Literal["time", "nfe"] = field(
        default="time",
        metadata={"help": "What drives both panels: measured wall time of each step, or forward passes (NFE)."},
    )
    frame_ms: int = field(default=100, metadata={"help": "Duration of one GIF frame in milliseconds (the last frame is held longer)."})
    metrics: bool = field(
        default=False,
        metadata={"help": "Also measure both models (evaluation.report): held-out perplexity (ELBO bound vs exact) on the "
                  "built-in validation stories, sample metrics of 32 unconditional samples, tokens/s; written to metrics.json."},
    )


@dataclass
class EvaluationArguments:
    """evaluate.py's own options; the checkpoint, --max-length, --seed and the sampler come from SamplingArguments."""

    validation_file: str | None = field(
        default=None, metadata={"help": "Text to measure (.txt, or .jsonl with a 'text' field). Default: the built-in corpus's validation stories."}
    )
    ar_checkpoint: str | None = field(
        default=None, metadata={"help": "Causal LM (GPT-2) whose exact perplexity is measured on the same text, e.g. results-ar/final-model."}
    )
    judge: str = field(
        default="results-ar/final-model",
        metadata={"help": "Causal LM that scores the samples (generative perplexity); any tokenizer. 'none' skips it. "
                  "When this default directory does not exist, the judge is skipped."},
    )
    num_t_samples: int = field(default=8, metadata={"help": "Stratified times t per sequence in the ELBO bound (more: less variance)."})
    max_eval_samples: int = field(default=500, metadata={"help": "Keep at most this many documents of the evaluation text (with --tasks: passages)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Sequences per forward pass when measuring perplexity."})
    line_by_line: bool | None = field(
        default=None, metadata={"help": "true/false: documents one per line / packed. Default: as the checkpoint was trained."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Also write metrics.json and the samples (samples.jsonl) here."})
    tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "Instead of the bound and samples: lm-eval tasks built from the held-out text (cloze: the last "
                  "word; choice: the real ending of four; carry, built-in stories: the real last sentence against the opening's "
                  "person, colour or object swapped), for this checkpoint and --ar-checkpoint (metrics.tasks); "
                  "TASK=FILE.jsonl scores your own file of the same fields."},
    )
    mc_num: int = field(default=128, metadata={"help": "--tasks: Monte Carlo masks per log-likelihood of the diffusion model."})
