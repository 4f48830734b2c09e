"""Block diffusion's training layout: the doubled row under BD3's attention mask, and the masked logits of it.
"""

import torch

from textdiffusion.errors import SettingsError
from textdiffusion.models import heads
from textdiffusion.models.heads import PADDING_OFFSET_POSITIONS, prediction_head

SUPPORTED = (*PADDING_OFFSET_POSITIONS, "bert", "modernbert")


def block_index(length: int, block_size: int) -> torch.Tensor:
    """(length,) the block each position belongs to."""
    return torch.arange(length) // block_size


def training_mask(length: int, block_size: int) -> torch.Tensor:
    """(2L, 2L) bool, [query, key], for the input noisy (positions 0..L-1) then clean (L..2L-1): BD3-LM's mask.

    noisy -> noisy: the same block only (block-diagonal); noisy -> clean: strictly earlier blocks;
    clean -> clean: the same or earlier blocks (block-causal); clean -> noisy: never.
    """
    block = block_index(length, block_size)
    same = block.unsqueeze(1) == block.unsqueeze(0)
    earlier = block.unsqueeze(1) > block.unsqueeze(0)
    top = torch.cat([same, earlier], dim=1)
    bottom = torch.cat([torch.zeros(length, length, dtype=torch.bool), same | earlier], dim=1)
    return torch.cat([top, bottom], dim=0)


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as the additive float mask the models' eager and SDPA paths both read: 0 where allowed, the
    dtype's minimum elsewhere (a boolean mask would be added as 0/1 by the eager path: silently wrong)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def position_ids(model, positions: torch.Tensor) -> torch.Tensor:
    """The ids the model's position embedding reads for token positions 0, 1, ...: RoBERTa-style models count
    from padding_idx + 1, the others from 0."""
    if model.config.model_type in PADDING_OFFSET_POSITIONS:
        return positions + model.config.pad_token_id + 1
    return positions


def check_model(model, block_size: int, length: int) -> None:
    """SettingsError unless `model` can be trained or sampled block by block at this length."""
    kind = model.config.model_type
    if kind not in SUPPORTED:
        raise SettingsError(
            f"block_size needs a model with absolute or rotary positions and plain attention ({', '.join(SUPPORTED)}); "
            f"{kind} is not one of them"
        )
    if "sliding_attention" in (getattr(model.config, "layer_types", None) or ()):
        raise SettingsError("block_size: ModernBERT checkpoints with sliding-window layers are not supported; "
                         "build one from scratch (from_scratch architecture modernbert) instead")
    if block_size < 1 or block_size > length or length % block_size:
        raise SettingsError(f"block_size {block_size} must be at least 1 and divide max_length {length}")


def doubled_inputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, block_size: int) -> dict:
    """The forward arguments of a (batch, 2L) noisy-then-clean input under `training_mask`. `attention_mask`
    (batch, 2L) marks real tokens (1) and padding (0); padding is never attended to."""
    length = input_ids.size(1) // 2
    allowed = training_mask(length, block_size).to(input_ids.device)
    allowed = allowed.unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # (batch, 2L, 2L)
    positions = torch.arange(length, device=input_ids.device).repeat(2).expand_as(input_ids)
    dtype = next(model.parameters()).dtype
    return dict(input_ids=input_ids, attention_mask=additive(allowed.unsqueeze(1), dtype),
                position_ids=position_ids(model, positions))


def doubled_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """(batch, L, vocab) logits of the noisy half of a (batch, 2L) noisy-then-clean input under `training_mask`."""
    return model(**doubled_inputs(model, input_ids, attention_mask, block_size)).logits[:, : input_ids.size(1) // 2]


def unit_logits(model, input_ids, attention_mask, labels, block_size: int | None):
    """(logits, labels) of a collator batch laid out per masking unit: one row per row of ordinary masked
    diffusion, or per block (noisy half only) with block diffusion. Every position gets logits; training and
    the bound use `masked_logits`, which computes them only where the loss reads them."""
    if not block_size:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits, labels
    logits = doubled_forward(model, input_ids, attention_mask, block_size)
    return logits.reshape(-1, block_size, logits.size(-1)), labels.reshape(-1, block_size)


def masked_logits(model, input_ids, attention_mask, labels, block_size: int | None):
    """The logits of a collator batch at its masked positions only (labels != -100), for the loss.

    Returns (logits (N, vocab), targets (N,), unit (N,)): `unit` numbers the masking unit each position belongs
    to, as `unit_logits` lays them out (a row, or a row's block with block diffusion) and as the collator's
    per-unit loss_weight and num_maskable are ordered. The encoder runs on every position, the LM head only on the
    masked ones (`masked_logits`, the sampler's: none of the clean half of block diffusion's doubled
    input); a model whose head is not known, or one wrapped for several processes, runs its own head everywhere."""
    masked = labels != -100
    if block_size:
        inputs = doubled_inputs(model, input_ids, attention_mask, block_size)
        where = torch.cat([masked, torch.zeros_like(masked)], dim=1)  # the noisy half only
    else:
        inputs, where = dict(input_ids=input_ids, attention_mask=attention_mask), masked
    logits = heads.masked_logits(model, prediction_head(model), where=where, ids=inputs.pop("input_ids"), **inputs)
    rows, columns = masked.nonzero(as_tuple=True)
    unit = rows * (labels.size(1) // block_size) + columns // block_size if block_size else rows
    return logits, labels[masked], unit
