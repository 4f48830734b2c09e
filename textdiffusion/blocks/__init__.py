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

from textdiffusion.blocks.cache import (  # noqa: F401
    ATTENTION,
    BlockModel,
    KeyValueCache,
    cached_attention,
)
from textdiffusion.blocks.training import (  # noqa: F401
    SUPPORTED,
    additive,
    block_index,
    check_model,
    doubled_forward,
    doubled_inputs,
    masked_logits,
    position_ids,
    training_mask,
    unit_logits,
)
