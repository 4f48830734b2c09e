"""Models: built from a config for training from scratch, or loaded from a checkpoint with how it was trained.

`load_checkpoint` is the one loader of a trained diffusion model: model, tokenizer, the settings train.py wrote
(`diffusion_config.json`) and the device, in eval mode. `build_model` makes a new masked LM (or the matched GPT-2).
"""

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    ModernBertConfig,
    ModernBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from cli import UsageError
from tokenization import load_tokenizer, unreachable_message

logger = logging.getLogger(__name__)

DIFFUSION_CONFIG = "diffusion_config.json"

# (hidden size, layers, heads, feed-forward size). base is roberta-base / distilroberta-base's width.
MODEL_SIZES = {"tiny": (128, 4, 4, 512), "small": (256, 6, 4, 1024), "base": (768, 12, 12, 3072)}


# Masked-LM architectures train.py can build from a config. roberta normalises after each block (post-LN, as
# the hub's BERT/RoBERTa), roberta-prelayernorm before it (as GPT-2); both learn absolute positions. modernbert
# is pre-LN with rotary positions and a gated MLP (its intermediate size is 2/3 of the others', so that the
# parameter count stays that of the same-size GPT-2). deberta (DeBERTa-v2) adds learned absolute positions to its
# input like roberta and also attends by relative position like modernbert: copying a word from wherever it stood
# needs relative positions, and deciding where a document ends when everything is masked needs absolute ones.
ARCHITECTURES = ("roberta", "roberta-prelayernorm", "modernbert", "deberta")

ROBERTA_CLASSES = {
    "roberta": (RobertaConfig, RobertaForMaskedLM),
    "roberta-prelayernorm": (RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM),
}



def build_model(
    objective: str, size: str, tokenizer, max_length: int, dropout: float = 0.0, architecture: str = "roberta",
    tie_word_embeddings: bool = True, initializer_range: float | None = None,
):
    """A new model of `size` for `tokenizer`: a masked LM of `architecture`, or GPT-2 with the same width and depth."""
    hidden, layers, heads, ffn = MODEL_SIZES[size]
    common = dict(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tie_word_embeddings,
        **({"initializer_range": initializer_range} if initializer_range else {}),
    )
    if objective == "ar":
        config = GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn, n_positions=max_length, **common,
            pad_token_id=tokenizer.pad_token_id, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        )
        return GPT2LMHeadModel(config)
    if architecture not in ARCHITECTURES:
        raise UsageError(f"--architecture {architecture!r} is unknown; choose one of {', '.join(ARCHITECTURES)}")
    if architecture == "deberta":
        config = DebertaV2Config(
            # Position projections shared with the content ones (as DeBERTa-v3), and a feed-forward layer 1/16
            # narrower for the relative-position table: the parameter count stays that of the same-size GPT-2.
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn * 15 // 16,
            max_position_embeddings=max_length, relative_attention=True, position_biased_input=True,
            pos_att_type=["p2c", "c2p"], max_relative_positions=max_length, share_att_key=True, type_vocab_size=0,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=tokenizer.pad_token_id,
            **common,
        )
        return DebertaV2ForMaskedLM(config)
    if architecture == "modernbert":
        config = ModernBertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn * 2 // 3,
            max_position_embeddings=max_length, layer_types=["full_attention"] * layers,
            embedding_dropout=dropout, mlp_dropout=dropout, attention_dropout=dropout,
            pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.eos_token_id,
            **common,
        )
        return ModernBertForMaskedLM(config)
    config_class, model_class = ROBERTA_CLASSES[architecture]
    config = config_class(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max_length + tokenizer.pad_token_id + 1,
        type_vocab_size=1,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
        **common,
    )
    return model_class(config)


def _model_type(name_or_path: str, trust_remote_code: bool) -> str:
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError) as err:
        if not Path(name_or_path).exists() and os.path.sep not in name_or_path:
            raise UsageError(unreachable_message(name_or_path, err)) from None
        raise UsageError(f"'{name_or_path}' is not a model checkpoint directory (no usable config.json)") from None


def is_causal_lm(name_or_path: str) -> bool:
    """Whether a checkpoint (a final-model or a Trainer checkpoint-N directory) holds an autoregressive LM."""
    model_type = _model_type(name_or_path, trust_remote_code=False)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_masked_lm(name_or_path: str, trust_remote_code: bool = False, dtype=None, tokenizer_path: str | None = None):
    """(model, tokenizer) of a masked LM; a causal LM or anything else is refused with a clear message.
    `tokenizer_path`: where the tokenizer is, when not beside the weights."""
    if not Path(name_or_path).exists() and (os.path.sep in name_or_path or name_or_path.startswith(".")):
        raise UsageError(f"checkpoint directory not found: {name_or_path}")
    model_type = _model_type(name_or_path, trust_remote_code)
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise UsageError(
            f"'{name_or_path}' is a {model_type} model, not a masked LM; diffusion needs RoBERTa, BERT, ModernBERT "
            "or another AutoModelForMaskedLM checkpoint"
        )
    tokenizer = load_tokenizer(tokenizer_path or name_or_path, need_mask=True, trust_remote_code=trust_remote_code)
    model = AutoModelForMaskedLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, dtype=dtype)
    check_vocab_fits(model, tokenizer, name_or_path)
    return model, tokenizer


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False, dtype=None):
    """(model, tokenizer) of an autoregressive LM such as GPT-2; a masked LM is refused."""
    if not Path(name_or_path).exists() and (os.path.sep in name_or_path or name_or_path.startswith(".")):
        raise UsageError(f"checkpoint directory not found: {name_or_path}")
    model_type = _model_type(name_or_path, trust_remote_code)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in ("roberta", "bert"):
        raise UsageError(f"'{name_or_path}' is a {model_type} model, not an autoregressive (causal) LM such as GPT-2")
    tokenizer = load_tokenizer(name_or_path, need_mask=False, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, dtype=dtype)
    check_vocab_fits(model, tokenizer, name_or_path)
    return model, tokenizer


def check_vocab_fits(model, tokenizer, name: str) -> None:
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise UsageError(f"the tokenizer of '{name}' has {len(tokenizer)} tokens but the model only {embeddings} embeddings")


def prediction_head(model):
    """The function that turns a masked LM's last hidden states (..., hidden) into logits (..., vocab), so logits
    can be computed for some positions only; None for a model whose head is not known (use model(...).logits).
    RoBERTa and DeBERTa: lm_head / cls; ModernBERT: head, then decoder."""
    for name in ("lm_head", "cls", "head"):
        module = getattr(model, name, None)
        if module is not None:
            if name == "head":
                return lambda hidden: model.decoder(module(hidden))
            return module
    return None


# Model types whose position ids count from padding_idx + 1 (RoBERTa's layout), so padding_idx + 1 positions are reserved.
PADDING_OFFSET_POSITIONS = ("roberta", "roberta-prelayernorm", "xlm-roberta", "camembert")


def max_positions(model) -> int:
    """Longest sequence the model's position embeddings allow (RoBERTa reserves padding_idx + 1 of them)."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9
    if config.model_type in PADDING_OFFSET_POSITIONS:
        limit -= config.pad_token_id + 1
    return limit


def save_diffusion_config(directory: str, settings: dict) -> None:
    with open(Path(directory) / DIFFUSION_CONFIG, "w") as f:
        json.dump(settings, f, indent=2, sort_keys=True)


def read_diffusion_config(directory: str) -> dict:
    """How the checkpoint was trained; {} for a plain hub masked LM (treated as packed, no end token)."""
    path = Path(directory) / DIFFUSION_CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Checkpoint:
    """A trained diffusion model with everything known about it, ready to sample (eval mode, on `device`)."""

    path: str
    model: torch.nn.Module
    tokenizer: object
    settings: dict = field(default_factory=dict)  # diffusion_config.json; {} for a plain hub masked LM
    device: torch.device = torch.device("cpu")

    @property
    def line_by_line(self) -> bool:
        """Trained one document per row, ending in the end token (else packed running text, no end token)."""
        return bool(self.settings.get("line_by_line", False))

    @property
    def max_positions(self) -> int:
        return max_positions(self.model)

    @property
    def block_size(self) -> int | None:
        """Block diffusion: the block size it was trained with (None: ordinary masked diffusion)."""
        return self.settings.get("block_size")

    @property
    def max_length(self) -> int:
        """The block length it was trained on; for a hub model, its positions up to 128."""
        return int(self.settings.get("max_length") or min(128, self.max_positions))


def _run_file_source(directory: Path, is_there) -> Path | None:
    """The directory itself, else (a Trainer checkpoint-N) its run's final-model/ or tokenizer/, that satisfies `is_there`."""
    for candidate in (directory, directory.parent / "final-model", directory.parent / "tokenizer"):
        if is_there(candidate):
            return candidate
    return None


def load_checkpoint(path: str, device: str | None = None, trust_remote_code: bool = False) -> Checkpoint:
    """The one loader of a diffusion checkpoint: a final-model directory train.py wrote, a Trainer checkpoint-N
    directory of a run (its tokenizer and settings then come from the run's final-model/ or tokenizer/), or any
    saved masked LM."""
    if not Path(path).is_dir():
        raise UsageError(
            f"--checkpoint {path}: no such directory; train one with `python train.py --quick-test` "
            "(writes results/final-model) or pass the final-model directory train.py wrote"
        )
    try:
        torch_device = pick_device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device} requested but CUDA is not available; use --device cpu")
    has_tokenizer = lambda d: (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()  # noqa: E731
    source = _run_file_source(Path(path), has_tokenizer)
    model, tokenizer = load_masked_lm(path, trust_remote_code=trust_remote_code, tokenizer_path=str(source or path))
    settings_dir = _run_file_source(Path(path), lambda d: (d / DIFFUSION_CONFIG).is_file())
    settings = read_diffusion_config(str(settings_dir)) if settings_dir else {}
    return Checkpoint(path, model.to(torch_device).eval(), tokenizer, settings, torch_device)
