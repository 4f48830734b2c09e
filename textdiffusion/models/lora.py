"""LoRA fine-tuning (Hu et al. 2021, with peft) of a pretrained masked LM: low-rank adapters on the encoder's linear
layers, the LM head trained in full, and what the run leaves: the merged model and the adapter.

`add_adapters` puts peft's LoRA layers into the model itself (get_peft_model changes it in place) and returns the
PeftModel around it; the Trainer trains the model, the PeftModel saves it (`save_merged`). The Trainer is not handed
the PeftModel because the loss runs the encoder alone (`model.base_model`) and the head only at the masked
positions, and a PeftModel's base_model is peft's tuner, not the encoder.

The head (every module outside the encoder: BERT's cls, RoBERTa's lm_head, ModernBERT's head and decoder) is
trained in place during training and saved in the adapter as peft's modules_to_save. Training it as a
modules_to_save copy would not survive the Trainer's checkpoints: a copy of a head whose decoder is the input
embedding matrix shares that tensor under names transformers refuses to save. That tied matrix is the vocabulary
the encoder reads too, so it stays frozen (training it would train the input embeddings: half of a small model's
weights); an untied output layer is trained like the rest of the head.
"""

import copy
import logging
import warnings
from pathlib import Path

import torch
from transformers.pytorch_utils import Conv1D

from textdiffusion.errors import SettingsError

logger = logging.getLogger(__name__)

ADAPTER = "adapter"  # final-model/adapter: the adapter and the trained head, for peft's PeftModel.from_pretrained
LINEAR_LAYERS = (torch.nn.Linear, Conv1D)  # Conv1D: GPT-2's linear layers


def head_names(model) -> list[str]:
    """Names of the model's top-level modules outside its encoder that hold weights: what turns hidden states
    into logits (the module that holds `get_output_embeddings()` and, for ModernBERT, the transform before it)."""
    names = [name for name, child in model.named_children()
             if child is not model.base_model and any(True for _ in child.parameters())]
    if not names or model.base_model is model:
        raise SettingsError(f"{type(model).__name__} has no LM head outside its encoder; LoRA needs a masked or causal LM")
    return names


def target_names(model, wanted: list[str] | None = None) -> list[str]:
    """Full names of the encoder's linear layers that get adapters: those whose name is, or ends in '.' + one of,
    `wanted` (query, attention.self.query, ...); all of them when `wanted` is None. A name that matches none is a
    SettingsError listing the names there are."""
    encoder = {id(module) for module in model.base_model.modules()}
    linear = [name for name, module in model.named_modules() if id(module) in encoder and isinstance(module, LINEAR_LAYERS)]
    if wanted is None:
        return linear
    def matches(name: str, target: str) -> bool:
        return name == target or name.endswith("." + target)

    for target in wanted:
        if not any(matches(name, target) for name in linear):
            known = sorted({name.rsplit(".", 1)[-1] for name in linear})
            raise SettingsError(
                f"lora target module {target!r} is not a linear layer of the encoder of {type(model).__name__}; its "
                f"linear layers are named {', '.join(known)} (a dotted suffix such as {'.'.join(linear[0].split('.')[-3:])} "
                f"works too; the head, {', '.join(head_names(model))}, is trained in full)"
            )
    return [name for name in linear if any(matches(name, target) for target in wanted)]


def add_adapters(model, r: int, alpha: float | None = None, dropout: float = 0.0, target_modules: list[str] | None = None,
                 seed: int | None = None):
    """Freeze `model`, put LoRA adapters of rank `r` (scale `alpha` / r, default alpha 2r) on the encoder's linear
    layers named by `target_modules` (default: all) and make its head trainable; returns the PeftModel around it
    (the same modules: train `model`, save with `save_merged`). `seed` seeds the adapters' random initial weights
    (the same seed, the same run) without touching the global random state. Logs the trainable parameters once."""
    if r < 1:
        raise SettingsError(f"lora rank {r} must be at least 1")
    alpha = 2 * r if alpha is None else alpha
    if not alpha > 0 or not 0 <= dropout < 1:
        raise SettingsError(f"lora alpha {alpha} must be > 0 and lora dropout {dropout} in [0, 1)")
    from peft import LoraConfig, get_peft_model  # peft takes seconds to import: only LoRA runs pay it

    heads, targets = head_names(model), target_names(model, target_modules)
    # GPT-2's Conv1D stores its weight transposed (fan_in_fan_out).
    transposed = any(isinstance(model.get_submodule(name), Conv1D) for name in targets)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        fan_in_fan_out=transposed)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        if seed is not None:
            torch.manual_seed(seed)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # transformers 5, asked by peft
        adapted = get_peft_model(model, config)
    vocabulary = {id(p) for p in model.get_input_embeddings().parameters()}
    for name in heads:
        for parameter in getattr(model, name).parameters():
            parameter.requires_grad = id(parameter) not in vocabulary
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA r=%d alpha=%g on %d linear layers of the encoder, the head (%s) trained in full: %d of %d "
                "parameters trainable (%.2f%%)", r, alpha, len(targets), ", ".join(heads), trainable, total,
                100 * trainable / total)
    return adapted


def save_merged(adapted, directory) -> torch.nn.Module:
    """Write the merged model into `directory` (config.json and safetensors, as any saved checkpoint: loading it
    needs no peft) and the adapter with the trained head into DIRECTORY/adapter (peft: PeftModel.from_pretrained on
    the base checkpoint); `adapted` is left as it was. Returns the merged model."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    directory = Path(directory)
    merged = copy.deepcopy(adapted).merge_and_unload()
    merged.save_pretrained(directory)
    # The adapter: the same LoRA weights on the base model, the head as modules_to_save (a copy of the trained one).
    config = copy.deepcopy(adapted.active_peft_config)
    config.modules_to_save = head_names(adapted.get_base_model())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft warns that a head tied to the input embeddings is saved in full; its tied matrix is saved unchanged.
        warnings.filterwarnings("ignore", message=".*tied.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        export = get_peft_model(copy.deepcopy(adapted).unload(), config)
    trained = get_peft_model_state_dict(adapted)  # the LoRA weights
    exported = get_peft_model_state_dict(export)  # the same names, with fresh LoRA weights, and the trained head
    if not trained.keys() <= exported.keys():
        raise RuntimeError(f"LoRA weights the exported adapter lacks: {sorted(trained.keys() - exported.keys())[:3]}")
    set_peft_model_state_dict(export, {**exported, **trained})
    export.save_pretrained(directory / ADAPTER)
    (directory / ADAPTER / "README.md").unlink(missing_ok=True)  # peft's blank template; final-model's card says it all
    return merged
