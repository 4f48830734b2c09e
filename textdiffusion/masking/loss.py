"""The masked-diffusion training loss (uniform or MDLM's ELBO weighting) from the logits of the masked positions.
"""

import torch

# uniform: the mean cross-entropy of the masked tokens; elbo: MDLM's per-token continuous-time bound.
LOSS_WEIGHTINGS = ("uniform", "elbo")


def diffusion_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weight: torch.Tensor,
    num_maskable: torch.Tensor,
    weighting: str = "uniform",
    banned_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss of a batch with logits at every position. Returns (loss, per-row cross-entropy sum,
    per-row masked count).

    logits (batch, seq, vocab); labels (batch, seq) with -100 where the input is visible; loss_weight (batch,)
    = m'(t)/(share masked), see `bound_weight`; num_maskable (batch,) = tokens that could have been masked.
    The masked positions are picked out and passed to `masked_diffusion_loss`.
    """
    masked = labels != -100
    rows = masked.nonzero(as_tuple=True)[0]
    return masked_diffusion_loss(logits[masked], labels[masked], rows, loss_weight, num_maskable, weighting, banned_ids)


def masked_diffusion_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    unit: torch.Tensor,
    loss_weight: torch.Tensor,
    num_maskable: torch.Tensor,
    weighting: str = "uniform",
    banned_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss from the logits of the masked positions only. Returns (loss, per-unit cross-entropy
    sum, per-unit masked count).

    logits (N, vocab) and targets (N,) of the N masked positions; unit (N,) the row (or block: a masking unit)
    each belongs to; loss_weight and num_maskable (units,) as in `diffusion_loss`.
    uniform: mean cross-entropy over masked tokens. elbo: sum over units of weight * unit cross-entropy sum,
    divided by the maskable tokens, i.e. the per-token continuous-time bound of MDLM.
    `banned_ids` (mask, padding, start) get no probability: they are never the answer.
    """
    logits = logits.float()
    if banned_ids is not None:
        logits = logits.index_fill(-1, banned_ids.to(logits.device), float("-inf"))
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    units = loss_weight.size(0)
    ce_sum = torch.zeros(units, dtype=ce.dtype, device=ce.device).index_add(0, unit, ce)
    count = torch.bincount(unit, minlength=units)
    if weighting == "elbo":
        loss = (loss_weight.to(ce.device) * ce_sum).sum() / num_maskable.sum().clamp_min(1)
    else:
        loss = ce_sum.sum() / count.sum().clamp_min(1)
    return loss, ce_sum, count
