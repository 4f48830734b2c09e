"""Loading checkpoints: the one loader of a trained diffusion model, and the hub/local masked and causal LMs.
"""

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from textdiffusion.data.tokenization import load_tokenizer, unreachable_message
from textdiffusion.errors import SettingsError
from textdiffusion.models import compilation, precision
from textdiffusion.models.diffusion_config import DIFFUSION_CONFIG, DiffusionConfig
from textdiffusion.models.heads import max_positions


def _model_type(name_or_path: str, trust_remote_code: bool) -> str:
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError) as err:
        if not Path(name_or_path).exists() and os.path.sep not in name_or_path:
            raise SettingsError(unreachable_message(name_or_path, err)) from None
        raise SettingsError(f"'{name_or_path}' is not a model checkpoint directory (no usable config.json)") from None


def is_causal_lm(name_or_path: str) -> bool:
    """Whether a checkpoint (a final-model or a Trainer checkpoint-N directory) holds an autoregressive LM."""
    model_type = _model_type(name_or_path, trust_remote_code=False)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_masked_lm(name_or_path: str, trust_remote_code: bool = False, dtype=None, tokenizer_path: str | None = None):
    """(model, tokenizer) of a masked LM; a causal LM or anything else is refused with a clear message.
    `tokenizer_path`: where the tokenizer is, when not beside the weights."""
    if not Path(name_or_path).exists() and (os.path.sep in name_or_path or name_or_path.startswith(".")):
        raise SettingsError(f"checkpoint directory not found: {name_or_path}")
    model_type = _model_type(name_or_path, trust_remote_code)
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise SettingsError(
            f"'{name_or_path}' is a {model_type} model, not a masked LM; diffusion needs RoBERTa, BERT, ModernBERT "
            "or another AutoModelForMaskedLM checkpoint"
        )
    tokenizer = load_tokenizer(tokenizer_path or name_or_path, need_mask=True, trust_remote_code=trust_remote_code)
    model, info = AutoModelForMaskedLM.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, dtype=dtype, output_loading_info=True
    )
    adapted = sorted(k for k in info["unexpected_keys"] if ".base_layer." in k or "lora_" in k)
    if adapted:
        raise SettingsError(
            f"'{name_or_path}' holds LoRA training weights ({adapted[0]}, ...), which a plain masked LM cannot load; "
            "sample from the run's final-model (the merged model), or continue it with train.py --resume-from-checkpoint"
        )
    # Weights the checkpoint lacked and that were initialised at random (BERT's MLM head transform, for a checkpoint
    # saved without its head): training gives them a learning rate of their own (train.py --new-weights-learning-rate).
    model.newly_initialised = frozenset(info["missing_keys"])
    check_vocab_fits(model, tokenizer, name_or_path)
    return model, tokenizer


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False, dtype=None):
    """(model, tokenizer) of an autoregressive LM such as GPT-2; a masked LM is refused."""
    if not Path(name_or_path).exists() and (os.path.sep in name_or_path or name_or_path.startswith(".")):
        raise SettingsError(f"checkpoint directory not found: {name_or_path}")
    model_type = _model_type(name_or_path, trust_remote_code)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in ("roberta", "bert"):
        raise SettingsError(f"'{name_or_path}' is a {model_type} model, not an autoregressive (causal) LM such as GPT-2")
    tokenizer = load_tokenizer(name_or_path, need_mask=False, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, dtype=dtype)
    check_vocab_fits(model, tokenizer, name_or_path)
    return model, tokenizer


def check_vocab_fits(model, tokenizer, name: str) -> None:
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise SettingsError(f"the tokenizer of '{name}' has {len(tokenizer)} tokens but the model only {embeddings} embeddings")


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str | None) -> torch.device:
    """The device `name` names (None: cuda when available, else cpu); SettingsError when it is not a device or not
    on this machine (CUDA asked for where there is none, or a GPU index past the last)."""
    try:
        device = pick_device(name)
    except RuntimeError:
        raise SettingsError(f"device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {name} requested but CUDA is not available; use device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SettingsError(f"device {name}: there are only {torch.cuda.device_count()} CUDA devices; use device "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


@dataclass
class Checkpoint:
    """A trained diffusion model with everything known about it, ready to sample (eval mode, on `device`)."""

    path: str
    model: torch.nn.Module
    tokenizer: object
    # How it was trained (diffusion_config.json); the defaults for a plain hub masked LM, which has none.
    diffusion_config: DiffusionConfig = field(default_factory=DiffusionConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # The precision it runs in (models.precision.DTYPES name; None: the device's default) and whether its encoder
    # is compiled (load_checkpoint's `dtype` and `compile`).
    dtype: str | None = None
    compiled: bool = False

    @contextmanager
    def forward_context(self):
        """The context every forward pass of this model runs in: autocast to `dtype` (nothing in float32) and, when
        compiled, a compiler failure at a first pass as a one-line SettingsError."""
        with precision.autocast(self.device, self.dtype or precision.default_dtype(self.device)):
            with compilation.compile_errors() if self.compiled else nullcontext():
                yield

    @property
    def line_by_line(self) -> bool:
        """Trained one document per row, ending in the end token (else packed running text, no end token)."""
        return self.diffusion_config.line_by_line

    @property
    def max_positions(self) -> int:
        return max_positions(self.model)

    @property
    def block_size(self) -> int | None:
        """Block diffusion: the block size it was trained with (None: ordinary masked diffusion)."""
        return self.diffusion_config.block_size

    @property
    def max_length(self) -> int:
        """The block length it was trained on; for a hub model, its positions up to 128."""
        return self.diffusion_config.max_length or min(128, self.max_positions)


def _run_file_source(directory: Path, is_there) -> Path | None:
    """The directory itself, else (a Trainer checkpoint-N) its run's final-model/ or tokenizer/, that satisfies `is_there`."""
    for candidate in (directory, directory.parent / "final-model", directory.parent / "tokenizer"):
        if is_there(candidate):
            return candidate
    return None


def load_checkpoint(path: str, device: str | None = None, trust_remote_code: bool = False, dtype: str | None = None,
                    compile: bool = False) -> Checkpoint:
    """The one loader of a diffusion checkpoint: a final-model directory train.py wrote, a Trainer checkpoint-N
    directory of a run (its tokenizer and settings then come from the run's final-model/ or tokenizer/), or any
    saved masked LM. `dtype`: the precision to sample in (models.precision; None: bfloat16 on a GPU, float32 on a
    CPU); `compile`: torch.compile its encoder. Both are checked against the device before anything is loaded."""
    if not Path(path).is_dir():
        raise SettingsError(
            f"checkpoint {path}: no such directory; a trained model's final-model directory is expected"
        )
    torch_device = check_device(device)
    dtype = precision.check_dtype(torch_device, dtype)
    if compile:
        compilation.check_compile(torch_device)
    has_tokenizer = lambda d: (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()
    source = _run_file_source(Path(path), has_tokenizer)
    model, tokenizer = load_masked_lm(path, trust_remote_code=trust_remote_code, tokenizer_path=str(source or path))
    settings_dir = _run_file_source(Path(path), lambda d: (d / DIFFUSION_CONFIG).is_file())
    config = DiffusionConfig.load(settings_dir) if settings_dir else DiffusionConfig()
    model = model.to(torch_device).eval()
    if compile:
        compilation.compile_encoder(model)
    return Checkpoint(path, model, tokenizer, config, torch_device, dtype, compile)
