"""Noise schedules m(t): the share of the generated span masked at time t, and the ELBO weights derived from them.

A schedule m(t) says which fraction of the generated span is masked at time t in [0, 1]: m(1) = 1 (all
masked), m(0) = 0 (all revealed). Training samples t and masks m(t) of the tokens (masking.collator);
generation walks t from 1 to 0 and keeps m(t) of the span masked after each step. Both read the same table,
so they cannot drift apart.
"""

import math

import torch

_EXP_RATE = 5.0


def _linear(t):
    return t


def _cosine(t):
    # MaskGIT's mask ratio cos(pi/2 * r) at progress r = 1 - t: few tokens revealed first, most at the end.
    return torch.sin(t * math.pi / 2)


def _exponential(t):
    # Masked share decays like exp(-5 * progress), rescaled to hit 0: many tokens revealed first.
    return torch.expm1(_EXP_RATE * t) / math.expm1(_EXP_RATE)


def _logarithmic(t):
    # The inverse shape of `exponential`: logarithmic growth, so the last steps reveal the fewest tokens.
    return torch.log1p(math.expm1(_EXP_RATE) * t) / _EXP_RATE


# SEDD's geometric noise (Lou et al. 2024): total noise sigma(t) = sigma_min^(1 - t) * sigma_max^t, masked share
# 1 - exp(-sigma(t)) for the absorbing process; rescaled here to be exactly 0 at t = 0 and 1 at t = 1 (unrescaled it
# is 1e-4 and 1 - 2e-9). Slow at first, then fast: most tokens are masked in the last third of the time.
_GEOMETRIC_SIGMA = (1e-4, 20.0)


def _geometric(t):
    low, high = _GEOMETRIC_SIGMA
    kept = torch.exp(-(low ** (1 - t)) * high**t)  # 1 - masked share, before rescaling
    first, last = math.exp(-low), math.exp(-high)
    return (first - kept) / (first - last)


# "log-linear" is the name MDLM and SEDD give the linear masking schedule (noise sigma(t) = -log(1 - t), so the
# kept share alpha_t = 1 - t and the masked share is t): the same curve as "linear", under their name.
SCHEDULES = {
    "linear": _linear, "cosine": _cosine, "exponential": _exponential, "logarithmic": _logarithmic, "log-linear": _linear,
    "geometric": _geometric,
}


def mask_fraction(schedule: str, t: torch.Tensor) -> torch.Tensor:
    """m(t): the share of the generated span that is masked at time t (float tensor in [0, 1])."""
    return SCHEDULES[schedule](t.double()).clamp(0.0, 1.0).to(t.dtype)


def elbo_weight(schedule: str, t: torch.Tensor) -> torch.Tensor:
    """m'(t) / m(t): the continuous-time ELBO weight of a masked token's cross-entropy at time t.

    For the linear schedule this is 1/t (MDLM, Sahoo et al. 2024, https://arxiv.org/abs/2406.07524, eq. 10).
    The derivative is taken by autograd so each schedule is written once.
    """
    with torch.enable_grad():  # the collator may run under no_grad (evaluation loops)
        t = t.detach().double().requires_grad_(True)
        m = SCHEDULES[schedule](t)
        (dm,) = torch.autograd.grad(m.sum(), t)
    return (dm / m.clamp_min(1e-12)).detach().float()


def bound_weight(schedule: str, t: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """(batch,) weight of each row's summed masked cross-entropy in the bound: m'(t) / (share actually masked).

    MDLM's weight is m'(t)/m(t) for tokens masked independently with probability m(t). The collator masks exactly
    ceil(m(t) n) of n tokens instead, and at least one; with m(t) in the denominator a t below 1/n would weight one
    masked token by up to 1/t, an estimator with infinite mean. Dividing by the share really masked, k/n, keeps
    the estimate finite and makes it, averaged over t ~ U(0, 1], the any-order autoregressive bound
    sum_k E[mean CE of k masked tokens] (Hoogeboom et al. 2021), which MDLM's integral approaches as n grows.
    For the linear schedule the weight is n/k.
    """
    with torch.enable_grad():  # elbo_weight differentiates the schedule; evaluation may run under no_grad
        slope = elbo_weight(schedule, t.cpu()).double() * mask_fraction(schedule, t.cpu().double())  # m'(t)
    weight = slope / rate.cpu().double().clamp_min(1e-12)
    return weight.masked_fill(rate.cpu() <= 0, 0.0).to(t.device)
