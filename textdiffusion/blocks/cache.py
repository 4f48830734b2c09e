"""Block diffusion's sampling side: a block model that computes each finished block once, in a key/value cache.
"""

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from textdiffusion.blocks.training import additive, position_ids
from textdiffusion.models.heads import Denoiser, prediction_head

ATTENTION = "block_cache"  # the name of the caching attention function in transformers' registry


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


class BlockModel(Denoiser):
    """A block-diffusion masked LM as the sampler calls it: logits at chosen positions of the current block.

    The sampler works on blocks [kB, (k+1)B) left to right. A call for block k runs, in one pass over the cache,
    the finished blocks not yet cached (block-causally: each sees itself and the blocks before it; their keys and
    values then join the cache) followed by block k, which sees them all. The first denoising pass of a block thus
    carries the block before it into the cache, and no pass is spent on the cache alone. With `cache=False` every
    call recomputes the whole prefix instead (the reference the cache must match, token for token).
    """

    def __init__(self, model, block_size: int, cache: bool = True):
        super().__init__(model)
        self.block_size, self.use_cache = block_size, cache
        self.config = model.config
        self.head = prediction_head(model)
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

    def logits_at(self, ids: torch.Tensor, where: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(where.sum(), vocab) logits at the `where` positions (all inside one block). The block-causal mask
        replaces `attention_mask`: every position before the block's end is text or a mask to fill."""
        hidden, start = self.hidden(ids, where)
        inside = where[:, start : start + hidden.size(1)]
        return self.head(hidden[inside])
