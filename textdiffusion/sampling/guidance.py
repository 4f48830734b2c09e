"""Guidance: classifier-free guidance by the prompt, and a causal LM as a product of experts (--guide).
"""

import torch

from textdiffusion.data.tokenization import same_tokenizer
from textdiffusion.errors import SettingsError
from textdiffusion.models.checkpoint import Checkpoint, load_causal_lm
from textdiffusion.models.heads import Denoiser, max_positions


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + (1 + scale) (cond - uncond); scale 0 is the conditional logits (LLaDA,
    arXiv 2502.09992, eq. 16, where the unconditional pass sees the prompt masked)."""
    return uncond + (1.0 + scale) * (cond - uncond)


def product_of_experts(logits: torch.Tensor, guide_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) log p_diffusion + weight log p_guide, per row (rows, vocab): a distribution proportional to
    p_diffusion^(1 - weight) p_guide^weight. Tokens either expert rules out (-inf) stay ruled out."""
    return (1.0 - weight) * logits.float().log_softmax(-1) + weight * guide_logits.float().log_softmax(-1)


def step_logits(denoiser: Denoiser, ids, attention_mask, where, prompt, mask_token_id: int, cfg_scale: float):
    """(logits at the `where` positions, forward passes spent): one pass, or with classifier-free guidance one
    batched pass over the sequences and their copies with the `prompt` masked, which counts as two."""
    if cfg_scale <= 0:
        return denoiser.logits_at(ids, where, attention_mask), 1
    pair = denoiser.logits_at(torch.cat([ids, ids.masked_fill(prompt, mask_token_id)]), torch.cat([where, where]),
                              attention_mask.repeat(2, 1))
    cond, uncond = pair.split(int(where.sum()))
    return guided(cond.float(), uncond.float(), cfg_scale), 2


def guided_by(guide, ids, attention_mask, where, rows: torch.Tensor, banned: torch.Tensor, weight: float) -> torch.Tensor:
    """`rows` (the diffusion model's logits at the `where` positions) joined with a causal LM's next-token logits
    there as a product of experts. The guide reads a draft: every `where` position filled with the row's argmax."""
    draft = ids.clone()
    draft[where] = rows.argmax(-1)
    # The guide's logits at position j - 1 are its distribution for the token at j.
    after = guide(input_ids=draft, attention_mask=attention_mask).logits[:, :-1][where[:, 1:]]
    after = after[:, : rows.size(-1)].float().index_fill(-1, banned, float("-inf"))
    return product_of_experts(rows, after, weight)


def load_guide(path: str, checkpoint: Checkpoint, max_length: int):
    """(causal LM, tokenizer) for --guide, on the checkpoint's device: refused unless it shares the diffusion
    model's tokenizer and fits --max-length."""
    model, tokenizer = load_causal_lm(path)
    if not same_tokenizer(tokenizer, checkpoint.tokenizer):
        raise SettingsError(f"guide {path} has another tokenizer than {checkpoint.path}; the guide must share it "
                         "(a causal LM trained on the same data, as the matched GPT-2 is)")
    if max_length > max_positions(model):
        raise SettingsError(f"guide {path} reads at most {max_positions(model)} tokens; use max_length {max_positions(model)} or less")
    return model.to(checkpoint.device).eval(), tokenizer


@torch.no_grad()
def guide_nll(guide, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """(batch,) the guide's mean negative log-likelihood of the `scored` tokens of `ids` (both (batch, seq))."""
    logp = guide(input_ids=ids.to(next(guide.parameters()).device)).logits[:, :-1].float().log_softmax(-1).cpu()
    token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # log p(token j | tokens before j)
    scored = scored[:, 1:]
    return -(token * scored).sum(-1) / scored.sum(-1).clamp_min(1)
