"""Block diffusion (BD3-LM, Arriola et al. 2025, https://arxiv.org/abs/2503.09573) on Hugging Face masked LMs.

A sequence of L tokens is cut into blocks of B. The model denoises one block at a time given the clean blocks
before it, so the likelihood factorises over blocks (autoregressive across blocks, masked diffusion inside one).

Training (`train.py --block-size B`) feeds 2L tokens: the noisy sequence, then the clean one, both at positions
0..L-1, under BD3's attention mask (`training_mask`): a noisy token sees its own noisy block and the clean blocks
before it; a clean token sees the clean blocks up to and including its own. The loss is taken on the noisy half.

Sampling (`BlockModel`) writes blocks left to right: every clean block is run once, in the first denoising pass of
the block after it, and its keys and values kept for every layer; the other passes run only the B tokens of the
current block, attending to that cache. The cache lives in an attention function registered with transformers
(`AttentionInterface`) that prepends the cached keys and values, so the model's own layers do all the work. The
uncached path (the whole prefix recomputed at every pass, under the block-causal mask) gives the same tokens.
"""

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import diffusion
from cli import UsageError
from models import PADDING_OFFSET_POSITIONS, prediction_head

ATTENTION = "block_cache"  # the name of the caching attention function in transformers' registry
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
    """UsageError unless `model` can be trained or sampled block by block at this length."""
    kind = model.config.model_type
    if kind not in SUPPORTED:
        raise UsageError(
            f"--block-size needs a model with absolute or rotary positions and plain attention ({', '.join(SUPPORTED)}); "
            f"{kind} is not one of them"
        )
    if "sliding_attention" in (getattr(model.config, "layer_types", None) or ()):
        raise UsageError("--block-size: ModernBERT checkpoints with sliding-window layers are not supported; "
                         "build one from scratch (--from-scratch --architecture modernbert) instead")
    if block_size < 1 or block_size > length or length % block_size:
        raise UsageError(f"--block-size {block_size} must be at least 1 and divide --max-length {length}")


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
    masked ones (`diffusion.masked_logits`, the sampler's: none of the clean half of block diffusion's doubled
    input); a model whose head is not known, or one wrapped for several processes, runs its own head everywhere."""
    masked = labels != -100
    if block_size:
        inputs = doubled_inputs(model, input_ids, attention_mask, block_size)
        where = torch.cat([masked, torch.zeros_like(masked)], dim=1)  # the noisy half only
    else:
        inputs, where = dict(input_ids=input_ids, attention_mask=attention_mask), masked
    logits = diffusion.masked_logits(model, prediction_head(model), where=where, ids=inputs.pop("input_ids"), **inputs)
    rows, columns = masked.nonzero(as_tuple=True)
    unit = rows * (labels.size(1) // block_size) + columns // block_size if block_size else rows
    return logits, labels[masked], unit


# ----------------------------------------------------------------------------- the key/value cache


class KeyValueCache:
    """Keys and values of the clean prefix, per layer: (batch, heads, prefix, head_dim) tensors."""

    def __init__(self):
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.store = 0  # how many of the pass's leading tokens join the cache (the finished blocks it carries)


def cached_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention that first prepends the cache of `module.block_cache` (if any) to the keys and values (every
    cached key is visible), and appends the keys and values of the pass's first `cache.store` tokens to it."""
    cache = getattr(module, "block_cache", None)
    if cache is not None:
        layer = module.layer_idx
        past = cache.keys[layer].size(2) if layer in cache.keys else 0
        if past:
            if attention_mask is not None:
                attention_mask = torch.nn.functional.pad(attention_mask, (past, 0), value=0.0)
            key = torch.cat([cache.keys[layer], key], dim=2)
            value = torch.cat([cache.values[layer], value], dim=2)
        if cache.store:
            cache.keys[layer], cache.values[layer] = key[:, :, : past + cache.store], value[:, :, : past + cache.store]
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, cached_attention)


class BlockModel:
    """A block-diffusion masked LM as the sampler calls it: logits at chosen positions of the current block.

    The sampler works on blocks [kB, (k+1)B) left to right. A call for block k runs, in one pass over the cache,
    the finished blocks not yet cached (block-causally: each sees itself and the blocks before it; their keys and
    values then join the cache) followed by block k, which sees them all. The first denoising pass of a block thus
    carries the block before it into the cache, and no pass is spent on the cache alone. With `cache=False` every
    call recomputes the whole prefix instead (the reference the cache must match, token for token).
    """

    def __init__(self, model, block_size: int, cache: bool = True):
        self.model, self.block_size, self.use_cache = model, block_size, cache
        self.config = model.config
        self.attention_modules = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config")]
        self.reset()

    def reset(self) -> None:
        self.cache = KeyValueCache()
        self.committed = 0  # positions [0, committed) are in the cache
        self.tokens_run = 0  # positions run through the model so far (the cost the cache saves)

    def parameters(self):
        return self.model.parameters()

    def _run(self, ids: torch.Tensor, start: int, store: int) -> torch.Tensor:
        """Hidden states of ids (batch, n) at positions start.. under the block-causal mask, after the cache (if on);
        the keys and values of the first `store` of them join it."""
        n = ids.size(1)
        self.tokens_run += n
        dtype = next(self.model.parameters()).dtype
        block = torch.arange(start, start + n, device=ids.device) // self.block_size
        allowed = block.unsqueeze(1) >= block.unsqueeze(0)  # block-causal
        mask = additive(allowed, dtype).expand(ids.size(0), 1, n, n)
        positions = torch.arange(start, start + n, device=ids.device).expand_as(ids)
        previous = self.config._attn_implementation
        self.cache.store = store
        for module in self.attention_modules:
            module.block_cache = self.cache if self.use_cache else None
        try:
            self.model.config._attn_implementation = ATTENTION
            return self.model.base_model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids(self.model, positions)
            ).last_hidden_state
        finally:
            self.model.config._attn_implementation = previous
            for module in self.attention_modules:
                module.block_cache = None

    def hidden(self, ids: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(hidden states of the current block, its first position). `where` (batch, seq) marks positions of
        one block; `ids` (batch, seq) holds the clean text of every block before it."""
        columns = where.any(0).nonzero()
        start = int(columns.min()) // self.block_size * self.block_size if len(columns) else 0
        end = min(start + self.block_size, ids.size(1))
        if not self.use_cache:
            return self._run(ids[:, :end], 0, store=0)[:, start:end], start
        if start < self.committed:
            raise ValueError(f"block at position {start} is before the cached prefix ({self.committed} positions)")
        first = self.committed
        hidden = self._run(ids[:, first:end], first, store=start - first)
        self.committed = start
        return hidden[:, start - first :], start

    def logits_at(self, head, ids: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """(where.sum(), vocab) logits at the `where` positions (all inside one block)."""
        hidden, start = self.hidden(ids, where)
        inside = where[:, start : start + hidden.size(1)]
        return (head or prediction_head(self.model))(hidden[inside])
