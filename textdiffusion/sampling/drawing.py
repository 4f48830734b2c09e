"""Drawing one token per position (greedy, top-k, nucleus, temperature) and how certain a proposal is.
"""

import torch

# How certain a proposal is, for the strategies that reveal the most certain positions first (confidence,
# threshold, entropy-bounded's order): all in [0, 1], 1 = certain.
CONFIDENCE_MEASURES = ("prob", "margin", "entropy")


SAMPLING_METHODS = ("greedy", "topk", "nucleus")


def draw_tokens(
    logits: torch.Tensor,
    sampling: str,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per position. Returns (ids, confidence), both shaped like logits[..., 0].

    The confidence is the probability of the chosen token under the filtered (top-k or nucleus), tempered
    distribution. Probabilities are taken in float64: in float32 the tail of a large
    vocabulary loses mass, which silently lowers the effective temperature. Only the kept tokens (the top k, or
    the sorted candidates of the nucleus) enter the draw, so top-k costs one draw over k tokens, not the vocabulary.
    """
    if sampling == "greedy":
        probs = logits.double().softmax(-1)
        confidence, ids = probs.max(-1)
        return ids, confidence.float()
    if sampling == "topk":
        values, index = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)  # (..., k), most likely first
    else:
        values, index = torch.sort(logits, dim=-1, descending=True)
    probs = (values.double() / temperature).softmax(-1)
    if sampling == "nucleus":
        # Mass strictly before each token: the token whose own probability crosses p is still kept.
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    flat = probs.reshape(-1, probs.size(-1))
    if generator is not None and generator.device.type != flat.device.type:
        # A generator only fills tensors on its own device: draw there, use the ids here.
        choice = torch.multinomial(flat.to(generator.device), 1, generator=generator).to(flat.device)
    else:
        choice = torch.multinomial(flat, 1, generator=generator)
    choice = choice.view(*probs.shape[:-1], 1)
    ids = index.gather(-1, choice).squeeze(-1)
    confidence = probs.gather(-1, choice).squeeze(-1)
    return ids, confidence.float()


def certainty(logits: torch.Tensor, measure: str, drawn_prob: torch.Tensor) -> torch.Tensor:
    """(rows,) certainty in [0, 1] of each row of logits (rows, vocab): `prob` the probability of the drawn token
    (under the sampling distribution, what `draw_tokens` returns), `margin` top-1 minus top-2 probability, `entropy`
    1 - H(p) / log(vocab) of the model's distribution."""
    if measure == "prob":
        return drawn_prob
    probs = logits.double().softmax(-1)
    if measure == "margin":
        top = probs.topk(2, dim=-1).values
        return (top[:, 0] - top[:, 1]).float()
    kept = logits.isfinite().sum(-1).clamp_min(2).double()  # banned tokens are not choices
    return (1.0 - entropy(logits) / kept.log()).clamp(0.0, 1.0).float()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """(rows,) entropy in nats of softmax(logits) (rows, vocab); -inf logits count as probability 0."""
    logp = logits.double().log_softmax(-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1).float()
