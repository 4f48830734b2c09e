"""The model card (README.md) of a saved model folder: what a hub page and a newcomer read first.

It says where the model comes from (its base model, or what was built from scratch), what it was trained on and
how (objective, data, layout, length, mask schedule, every field of diffusion_config.json), how well it did on
held-out text at the end of training, and the exact command that samples from it; its YAML front matter is the
metadata a hub page reads. final-model gets one (training.saving), and so does each checkpoint-N the Trainer saves
(`CheckpointCards`).
"""

import contextlib
import json
import math
import os
import re
from pathlib import Path

import transformers
from huggingface_hub import ModelCardData
from transformers import TrainerCallback

from textdiffusion.data.tokenization import (
    BACKEND_CLASS,
    PORTABLE_CLASS,
    make_tokenizer_config_portable,
)
from textdiffusion.errors import SettingsError
from textdiffusion.models.diffusion_config import DiffusionConfig

MODEL_CARD = "README.md"
RUN_ARGS = "run_args.json"  # train.py's record of every resolved argument, in the run's output directory
BUILTIN_DATASETS = {"builtin": "the built-in story corpus", "builtin-fixed": "the built-in fixed-layout story corpus"}
# The held-out numbers the card reports, in this order, with what each one is (by objective).
HELD_OUT = {
    "diffusion": {
        "eval_loss": "mean cross-entropy of the masked tokens at the ten fixed mask levels (nats)",
        "eval_elbo": "ELBO bound on the negative log-likelihood per document token (nats; an unbiased one-draw estimate)",
        "eval_ppl_bound": "perplexity bound, exp(ELBO)",
    },
    "ar": {"eval_loss": "next-token cross-entropy per token (nats)"},
}
# A hub repository id (user/name or name): what `base_model` may be; a local path is not one.
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def read_run_args(run_dir) -> dict | None:
    """RUN_DIR/run_args.json as train.py wrote it, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / RUN_ARGS).read_text())
    except (OSError, ValueError):
        return None


def write_model_card(directory, config: DiffusionConfig, metrics: dict | None = None, run_args: dict | None = None,
                     model=None, shown_as: str | None = None, hub_model_id: str | None = None) -> Path:
    """Write DIRECTORY/README.md; returns its path. `shown_as`: the folder's name in the card's commands when it is
    written under another (the temporary folder final-model is renamed from). `run_args`: train.py's run_args.json
    (base model, data, sizes); `metrics`: the held-out evaluation of this model; `model`: for its size;
    `hub_model_id`: the repository it will be pushed to. A folder that cannot be written is a SettingsError naming it."""
    path = Path(directory) / MODEL_CARD
    text = model_card(config, metrics or {}, run_args or {}, model, shown_as or str(directory), hub_model_id,
                      saved_tokenizer(directory))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # never a half-written card
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise SettingsError(f"cannot write the model card in {shown_as or directory}: {err.strerror or err}") from None
    return path


def saved_tokenizer(directory) -> tuple[str | None, str | None]:
    """(the tokenizer_class DIRECTORY/tokenizer_config.json names, its mask token when tokenizer.json says it absorbs
    the space before it, else None); (None, None) where the files are not there."""
    try:
        settings = json.loads((Path(directory) / "tokenizer_config.json").read_text())
        added = json.loads((Path(directory) / "tokenizer.json").read_text()).get("added_tokens", [])
    except (OSError, ValueError):
        return None, None
    mask = settings.get("mask_token")
    mask = mask.get("content") if isinstance(mask, dict) else mask
    return settings.get("tokenizer_class"), mask if any(t.get("content") == mask and t.get("lstrip") for t in added) else None


def model_card(config: DiffusionConfig, metrics: dict, run_args: dict, model, folder: str,
               hub_model_id: str | None = None, tokenizer: tuple[str | None, str | None] = (None, None)) -> str:
    """The card's text: YAML front matter, then the sections."""
    model_args, data_args = run_args.get("ModelArguments", {}), run_args.get("DataArguments", {})
    base = base_model(model_args, model)
    diffusion = config.objective == "diffusion"
    kind = getattr(getattr(model, "config", None), "model_type", None) or model_args.get("architecture")
    dataset = None if data_args.get("train_file") else data_args.get("dataset_name") or config.corpus
    metadata = ModelCardData(
        library_name="transformers",
        pipeline_tag="fill-mask" if diffusion else "text-generation",
        tags=["text-diffusion", *(["masked-diffusion", "diffusion-lm"] if diffusion else ["autoregressive-baseline"]),
              *([kind] if kind else [])],
        base_model=base if base and HUB_ID.match(base) and not Path(base).exists() else None,
        datasets=[dataset] if dataset and dataset not in BUILTIN_DATASETS else None,
        license=base_license(base),
    )
    title = Path(folder).name
    sections = [
        f"---\n{metadata.to_yaml()}\n---\n",
        f"# {title}\n",
        ("A masked-diffusion language model: a masked LM trained to recover text hidden at every mask rate, which "
         "generates by unmasking a fully masked span step by step (MDLM, Sahoo et al. 2024)." if diffusion else
         "The autoregressive GPT-2 baseline of a masked-diffusion run: the same data, tokenizer and size, trained "
         "left to right.") + " Trained with text-diffusion's `train.py`.\n",
        "## Sample from it\n\n" + sampling_commands(config, folder, hub_model_id),
        "## Model\n\n" + "\n".join(model_lines(config, model_args, model, base, kind)) + "\n",
        "## Training data\n\n" + "\n".join(data_lines(config, data_args)) + "\n",
        "## Diffusion config\n\nThe fields of `diffusion_config.json`, which the sampler reads:\n\n"
        + table(("field", "value"), [(f"`{k}`", f"`{json.dumps(v)}`") for k, v in config.to_dict().items()]),
        "## Held-out evaluation\n\n" + held_out(metrics, config.objective),
        "## Loading\n\n" + loading_note(tokenizer[0], tokenizer[1] if diffusion else None),
    ]
    return "\n".join(sections)


def base_model(model_args: dict, model) -> str | None:
    """The checkpoint this model was fine-tuned from, or None when it was built from scratch."""
    if model_args:
        return None if model_args.get("from_scratch") else model_args.get("model_name_or_path")
    return getattr(model, "name_or_path", None) or None


def base_license(base: str | None) -> str | None:
    """The license of a local base model, as its own card's front matter says; None when unknown."""
    if not base or not (Path(base) / MODEL_CARD).is_file():
        return None
    match = re.search(r"^---\n.*?^license:\s*(\S+)\s*$.*?^---", (Path(base) / MODEL_CARD).read_text(errors="replace"),
                      re.MULTILINE | re.DOTALL)
    return match.group(1) if match else None


def model_lines(config: DiffusionConfig, model_args: dict, model, base: str | None, kind: str | None) -> list[str]:
    if base:
        origin = f"fine-tuned from `{base}`"
    else:
        preset = model_args.get("model_size")
        origin = f"trained from scratch: {kind or 'unknown architecture'}, {preset + ' ' if preset else ''}({size(model)})"
    lines = [f"- Base model: {origin}",
             f"- Objective: {config.objective} ("
             + ("masked diffusion" if config.objective == "diffusion" else "next-token prediction, the GPT-2 baseline") + ")"]
    if config.objective == "diffusion":
        lines += [f"- Mask schedule: {config.schedule} (the share masked at time t; the sampler walks the same one)",
                  f"- Mask rates: {config.mask_rates}, loss weighting: {config.loss_weighting}"]
        if config.block_size:
            lines.append(f"- Block diffusion: blocks of {config.block_size} tokens")
    if model_args.get("tokenizer_type") and not base:
        lines.append(f"- Tokenizer: {model_args['tokenizer_type']}, trained on the training text "
                     f"(at most {model_args.get('vocab_size')} pieces)")
    return lines


def size(model) -> str:
    """Width, depth and parameter count of `model`, as far as it is known."""
    settings = getattr(model, "config", None)
    parts = []
    if settings is not None:
        for name, word in (("hidden_size", "hidden {}"), ("num_hidden_layers", "{} layers"), ("num_attention_heads", "{} heads")):
            if getattr(settings, name, None) is not None:
                parts.append(word.format(getattr(settings, name)))
    if hasattr(model, "num_parameters"):
        parts.append(f"{model.num_parameters() / 1e6:.2f}M parameters")
    return ", ".join(parts) or "size unknown"


def data_lines(config: DiffusionConfig, data_args: dict) -> list[str]:
    train_file = data_args.get("train_file")
    if train_file:
        source = f"the train file `{Path(train_file).name}`"
        if data_args.get("validation_file"):
            source += f", validated on `{Path(data_args['validation_file']).name}`"
    else:
        name = data_args.get("dataset_name") or config.corpus
        if name in BUILTIN_DATASETS:
            source = f"{BUILTIN_DATASETS[name]} (`{name}`)"
        else:
            source = f"the dataset `{name}`" + (f" (`{data_args['dataset_config']}`)" if data_args.get("dataset_config") else "")
    layout = ("line by line: each line one document, filled to the row length with the end token" if config.line_by_line
              else "packed: documents joined by the end token and cut into rows")
    return [f"- Data: {source}", f"- Layout: {layout}",
            f"- Max length: {config.max_length} tokens" if config.max_length else "- Max length: the model's positions"]


def sampling_commands(config: DiffusionConfig, folder: str, hub_model_id: str | None) -> str:
    """The commands that sample from the folder (from a text-diffusion checkout), and how to get it from the hub."""
    text = ""
    if hub_model_id:
        text += f"Download it first:\n\n```bash\nhf download {hub_model_id} --local-dir {folder}\n```\n\n"
    if config.objective == "diffusion":
        text += (f"From the root of a text-diffusion checkout:\n\n```bash\npython generate.py --checkpoint {folder}\n```\n\n"
                 "With transformers alone, its masked-LM head fills a gap (one step, not the diffusion sampler):\n\n"
                 f"```python\nfrom transformers import pipeline\n\nfill = pipeline(\"fill-mask\", model={json.dumps(folder)})\n"
                 "print(fill(f\"the cat sat on the {fill.tokenizer.mask_token} .\"))\n```\n")
    else:
        text += ("From the root of a text-diffusion checkout, side by side with a diffusion model:\n\n"
                 f"```bash\npython compare_models.py --gpt2-checkpoint {folder}\n```\n\n"
                 f"With transformers alone:\n\n```python\nfrom transformers import pipeline\n\n"
                 f"generate = pipeline(\"text-generation\", model={json.dumps(folder)})\nprint(generate(\"the cat\"))\n```\n")
    return text


def held_out(metrics: dict, objective: str) -> str:
    rows = [(f"`{key}`", f"{metrics[key]:.4f}", what) for key, what in HELD_OUT[objective].items() if key in metrics]
    if objective == "ar" and "eval_loss" in metrics:
        rows.append(("perplexity", f"{math.exp(min(metrics['eval_loss'], 50.0)):.3f}", "exp(eval_loss), exact"))
    if not rows:
        return "Not evaluated on held-out text at this point.\n"
    where = f" at step {metrics['step']}" if "step" in metrics else " at the end of training"
    text = f"Measured on the held-out text{where}, on this model:\n\n" + table(("metric", "value", "what it is"), rows)
    levels = [(key.removeprefix("eval_loss_mask_"), metrics[key]) for key in metrics if key.startswith("eval_loss_mask_")]
    if levels:
        text += "\nLoss by mask rate: " + ", ".join(f"{rate}: {value:.3f}" for rate, value in levels) + "\n"
    if "best_step" in metrics:
        text += f"\nThis is the checkpoint of step {metrics['best_step']}, the lowest held-out loss of the run.\n"
    return text


def loading_note(tokenizer_class: str | None, space_taking_mask: str | None) -> str:
    text = f"Saved with transformers {transformers.__version__}."
    if tokenizer_class == PORTABLE_CLASS:
        text += (f" Its tokenizer_config.json names `{PORTABLE_CLASS}` (not transformers 5's own name "
                 f"`{BACKEND_CLASS}`), so transformers 4.x and 5.x both load the tokenizer from tokenizer.json.")
    elif tokenizer_class == BACKEND_CLASS:
        text += f" Its tokenizer_config.json names `{BACKEND_CLASS}`: it loads with transformers 5 or later only."
    elif tokenizer_class:
        text += f" Its tokenizer is a `{tokenizer_class}`."
    if space_taking_mask:
        text += (f" Its pieces carry their leading space (as RoBERTa's do) and its mask token absorbs the space before "
                 f"it, so `fill-mask` fills \"the {space_taking_mask} .\" without a double space.")
    return text + "\n"


def table(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]) + "\n"


def finish_model_folder(directory, config: DiffusionConfig, metrics: dict | None, run_args: dict | None, model=None,
                        shown_as: str | None = None, hub_model_id: str | None = None) -> None:
    """What a saved model folder gets besides the Trainer's files: a tokenizer_config.json that transformers 4 reads
    and the model card."""
    make_tokenizer_config_portable(directory)
    write_model_card(directory, config, metrics, run_args, model, shown_as, hub_model_id)


class CheckpointCards(TrainerCallback):
    """Each checkpoint-N the Trainer saves gets what final-model gets (`finish_model_folder`), with the evaluation of
    that step when there was one. Runs on the main process only."""

    def __init__(self, config: DiffusionConfig, run_dir):
        self.config = config
        self.run_dir = Path(run_dir)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        evaluations = [entry for entry in state.log_history if "eval_loss" in entry and entry.get("step") == state.global_step]
        finish_model_folder(folder, self.config, evaluations[-1] if evaluations else {}, read_run_args(self.run_dir), model)
