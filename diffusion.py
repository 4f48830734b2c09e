"""Noise schedules, the diffusion loss weighting, and the one iterative-unmasking sampler.

A schedule m(t) says which fraction of the generated span is masked at time t in [0, 1]: m(1) = 1 (all
masked), m(0) = 0 (all revealed). Training samples t and masks m(t) of the tokens (data_collator.py);
generation walks t from 1 to 0 in `steps` equal steps and keeps m(t) of the span masked after each one.
Both read the same table below, so they cannot drift apart.
"""

import math
from dataclasses import dataclass, field

import torch

from models import prediction_head

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
STRATEGIES = ("remask", "random", "confidence", "threshold", "entropy-bounded", "remdm", "adaptive")
# How certain a proposal is, for the strategies that reveal the most certain positions first (confidence,
# threshold, entropy-bounded's order): all in [0, 1], 1 = certain.
CONFIDENCE_MEASURES = ("prob", "margin", "entropy")
REMASK_SCHEDULES = ("cap", "rescale", "conf", "loop")  # ReMDM's sigma_t (Wang et al. 2025, arXiv 2503.00307, sec. 4)
SAMPLING_METHODS = ("greedy", "topk", "nucleus")


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


# ----------------------------------------------------------------------------- sampling one token per position


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


# ----------------------------------------------------------------------------- the sampler


@dataclass
class SamplerConfig:
    steps: int = 16
    schedule: str = "cosine"
    strategy: str = "confidence"
    sampling: str = "topk"
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    threshold: float = 0.9
    block_size: int | None = None
    confidence: str = "prob"
    entropy_budget: float = 1.0
    remask_eta: float = 0.05
    remask_schedule: str = "cap"
    loop_on: float = 0.55  # ReMDM-loop: the loop runs for t in [loop_off, loop_on] ...
    loop_off: float = 0.05
    loop_alpha: float = 0.9  # ... with this share of the span decoded
    sparse_logits: bool = True  # the LM head only at the positions a step draws (same tokens, less work)
    cfg_scale: float = 0.0  # classifier-free guidance by the prompt (0: none)
    candidates: int = 0  # top tokens recorded per drawn position in the trajectory (for the viewer; 0: none)
    guide_weight: float = 0.0  # weight of the causal-LM guide in the product of experts (0: no guide)
    end_after_text: bool = True  # certainty-ordered strategies: an end token only right after revealed text


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


def entropy_bounded_count(entropies: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor, budget: float) -> torch.Tensor:
    """(batch,) how many candidates to reveal, in order of `scores` (most certain first), by EB-sampler's rule
    (arXiv 2505.24857): the longest such prefix whose entropies sum, less the largest of them, to at most `budget`.
    At least one per row with a candidate. All arguments but `budget` are (batch, seq)."""
    order = scores.masked_fill(~candidates, float("-inf")).argsort(-1, descending=True)
    ordered = entropies.gather(-1, order).masked_fill(~candidates.gather(-1, order), float("nan"))
    spent = ordered.nan_to_num(0.0).cumsum(-1) - ordered.nan_to_num(0.0).cummax(-1).values  # never decreases
    fits = (spent <= budget) & ~ordered.isnan()
    return fits.sum(-1).clamp_min(1).minimum(candidates.sum(-1))


def remdm_sigma(schedule: str, eta: float, alpha_t: torch.Tensor, alpha_s: torch.Tensor) -> torch.Tensor:
    """ReMDM's re-masking probability for a step from kept share alpha_t to alpha_s > alpha_t: at most
    sigma_max = min(1, (1 - alpha_s) / alpha_t) (beyond it the masked share could not fall to 1 - alpha_s).
    cap: min(eta, sigma_max); rescale and conf: eta * sigma_max (conf spreads it over tokens by confidence)."""
    sigma_max = ((1 - alpha_s) / alpha_t.clamp_min(1e-12)).clamp(max=1.0)
    return torch.minimum(torch.full_like(sigma_max, eta), sigma_max) if schedule == "cap" else eta * sigma_max


def loop_masked_share(t: float, on: float, off: float, alpha: float) -> float:
    """ReMDM-loop's masked share at time t: decode to a share `alpha` by t = `on` (linearly in t), hold it while
    re-masking until t = `off`, then decode the rest."""
    if t >= on:
        return 1.0 - alpha * (1.0 - t) / (1.0 - on)
    if t >= off:
        return 1.0 - alpha
    return (1.0 - alpha) * t / off


@dataclass
class TrajectoryStep:
    """The state after one sampler step (step 0 is the start: every generated position masked).

    All tensors are (batch, seq) and on the CPU. `revealed` marks positions that were masked before this step
    and hold a token after it; `remasked` marks positions that held a generated token and are masked again.
    `confidence` is the probability of the token each position holds after this step (0 where masked or fixed).
    `candidates` / `candidate_probs` (batch, seq, SamplerConfig.candidates), None when that is 0: at every position
    the step drew for, the most likely tokens of the distribution it drew from (guidance included, before
    temperature and top-k/p), -1 / 0 elsewhere: what the sampler weighed.
    """

    ids: torch.Tensor
    revealed: torch.Tensor
    remasked: torch.Tensor
    confidence: torch.Tensor
    candidates: torch.Tensor | None = None
    candidate_probs: torch.Tensor | None = None
    active: torch.Tensor | None = None  # (batch, seq) bool: the block this step worked on (None: the whole span)


@dataclass
class SampleResult:
    ids: torch.Tensor  # (batch, seq) final ids, no mask left in the generated span
    fixed: torch.Tensor  # (batch, seq) True where the caller fixed the token (prefix, infill context)
    trajectory: list[TrajectoryStep] = field(default_factory=list)
    nfe: int = 0  # forward passes of the model (denoising passes; with block diffusion, over one block each)
    guide_nfe: int = 0  # forward passes of the causal-LM guide, if any

    def rows(self, index: torch.Tensor) -> "SampleResult":
        """The same result for the samples `index` (1-D) only, trajectory included."""
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        steps = [TrajectoryStep(s.ids[index], s.revealed[index], s.remasked[index], s.confidence[index],
                                pick(s.candidates), pick(s.candidate_probs), pick(s.active)) for s in self.trajectory]
        return SampleResult(self.ids[index], self.fixed[index], steps, self.nfe, self.guide_nfe)


def _reveal_top(scores: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per row, the `counts[row]` candidate positions with the highest score. All (batch, seq) except counts."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.size(-1)).expand_as(order))
    return (rank < counts.unsqueeze(-1)) & candidates


def anchored_runs(members: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: the `members` whose run (a maximal stretch of consecutive members) starts right after
    an anchor position, or at the start of the row."""
    index = torch.arange(members.size(-1), device=members.device).expand_as(members)
    # The last position at or before each one that is not a member: every member of a run shares it.
    last_other = torch.where(members, -1, index).cummax(-1).values
    return members & (anchors.gather(-1, last_other.clamp_min(0)) | (last_other < 0))


def ends_after_text(masked: torch.Tensor, proposal: torch.Tensor, end_token_id: int) -> torch.Tensor:
    """(batch, seq) bool: the masked positions proposing the end token that may be revealed now, those of a run
    of end-token proposals that starts right after a position already revealed (or fixed).

    A line-by-line model is nearly sure of the end token at the tail of an all-masked row; revealed in order of
    certainty, each one makes the end token more likely one position to its left, and the ends cascade leftwards
    until every story is the shortest it can be. Letting the end run grow only rightwards from revealed text leaves
    the decision where the text stops to the text, as a left-to-right model makes it.
    """
    return anchored_runs(masked & (proposal == end_token_id), ~masked)


def _left(flags: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: whether the position to the left holds `flags` (False at the first position)."""
    return torch.nn.functional.pad(flags[:, :-1], (1, 0), value=False)


def _blocks(generated: torch.Tensor, block_size: int | None, aligned: bool = False) -> list[torch.Tensor]:
    """Left-to-right blocks of the columns of `generated` (batch, seq): a list of (seq,) bool masks, the whole row
    without a block size. Blocks start at the first generated position, or with `aligned` at multiples of block_size
    (as a block-diffusion model was trained); blocks with nothing to generate are skipped."""
    column = torch.arange(generated.size(-1))
    if not block_size:
        return [torch.ones_like(column, dtype=torch.bool)]
    todo = generated.any(0)
    first = int(todo.nonzero().min()) if todo.any() else 0
    last = int(todo.nonzero().max()) + 1 if todo.any() else 0
    if aligned:
        first -= first % block_size
    ranges = [(column >= start) & (column < start + block_size) for start in range(first, last, block_size)]
    return [columns for columns in ranges if (todo & columns).any()]


@torch.no_grad()
def sample(
    model,
    input_ids: torch.Tensor,
    mask_token_id: int,
    config: SamplerConfig,
    banned_token_ids: list[int] = (),
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
    progress=None,
    guide=None,
    end_token_id: int | None = None,
) -> SampleResult:
    """Iteratively unmask every `mask_token_id` position of `input_ids` (batch, seq).

    Positions that are not masked at the start are fixed and never change (prefix, infill context, suffix).
    `banned_token_ids` can never be sampled (the mask, padding and start tokens; the end token too unless the
    model was trained to end documents with it). `progress`, if given, is called with no arguments per step.
    `guide` (with config.guide_weight > 0) is a causal LM: at each step it reads a draft of the sequence (every
    masked position filled with the diffusion model's most likely token) and its next-token distribution at each
    masked position, given the draft to its left, joins the diffusion model's as a product of experts.
    `end_token_id` (a model that ends documents with it) with config.end_after_text: the certainty-ordered
    strategies reveal an end token only as part of a run that starts right after revealed text (ends_after_text).
    `model` may be a blocks.BlockModel (a block-diffusion checkpoint): blocks are then its own, aligned as in
    training, each computed over the cached prefix, and with `end_token_id` sampling stops after the first block
    by which every row has written an end token (the rest of the row is end tokens, as in training).
    """
    device = next(model.parameters()).device
    ids = input_ids.clone().to(device)
    generated = ids == mask_token_id  # (batch, seq): the span the sampler writes
    fixed = ~generated
    if attention_mask is None:
        attention_mask = torch.ones_like(ids)
    banned = torch.tensor(sorted(set(banned_token_ids) | {mask_token_id}), device=device)
    nothing = torch.zeros_like(generated)
    trajectory = [_record(ids, nothing, nothing, torch.zeros(ids.shape))]  # step 0: the start
    nfe = guide_nfe = 0
    head = prediction_head(model) if config.sparse_logits else None
    prompt = fixed & ~torch.isin(ids, banned)  # the text the caller fixed (start, padding ... excluded)
    # Certainty-ordered strategies reveal an end token only as part of a run that starts after revealed text.
    ordered_ends = end_token_id is not None and config.end_after_text and config.strategy not in ("random", "remdm", "remask")
    model_blocks = getattr(model, "block_size", None)  # a blocks.BlockModel's own block size
    if model_blocks:
        model.reset()
    blocks = _blocks(generated.cpu(), model_blocks or config.block_size, aligned=bool(model_blocks))
    steps_per_block = [config.steps // len(blocks) + (i < config.steps % len(blocks)) for i in range(len(blocks))]
    for columns, block_steps in zip(blocks, steps_per_block):
        columns = columns.to(device).expand_as(generated)
        block = generated & columns  # the positions this block generates
        span = block.sum(-1)  # (batch,) positions this block generates
        block_steps = max(block_steps, 1)
        confidence = torch.zeros(ids.shape, device=device)
        for step in range(1, block_steps + 1):
            masked = ids == mask_token_id
            block_masked = masked & block
            if config.strategy in ("threshold", "entropy-bounded", "adaptive") and not block_masked.any():
                break
            rows, passes = step_logits(model, head, ids, attention_mask, block_masked, prompt, mask_token_id, config.cfg_scale)
            nfe += passes
            proposal, proposal_conf = ids.clone(), torch.zeros(ids.shape, device=device)
            score, spread = torch.zeros(ids.shape, device=device), torch.zeros(ids.shape, device=device)
            k = config.candidates
            top_ids = torch.full((*ids.shape, k), -1, dtype=torch.long, device=device) if k else None
            top_probs = torch.zeros((*ids.shape, k), device=device) if k else None
            if block_masked.any():
                rows = rows.float().index_fill(-1, banned, float("-inf"))
                if guide is not None and config.guide_weight > 0:
                    rows = guided_by(guide, ids, attention_mask, block_masked, rows, banned, config.guide_weight)
                    guide_nfe += 1
                drawn, drawn_conf = draw_tokens(
                    rows, config.sampling, config.temperature, config.top_k, config.top_p, generator
                )
                proposal[block_masked] = drawn
                proposal_conf[block_masked] = drawn_conf
                if k:
                    best = rows.topk(min(k, rows.size(-1)), dim=-1)  # softmax only over the k kept: same order
                    probs = (best.values - rows.logsumexp(-1, keepdim=True)).exp()
                    top_probs[block_masked] = torch.nn.functional.pad(probs, (0, k - probs.size(-1)))
                    top_ids[block_masked] = torch.nn.functional.pad(best.indices, (0, k - best.indices.size(-1)), value=-1)
                score[block_masked] = certainty(rows, config.confidence, drawn_conf)
                if config.strategy == "entropy-bounded":
                    spread[block_masked] = entropy(rows)
            t_now = torch.tensor(1.0 - (step - 1) / block_steps, dtype=torch.float64)
            t_next = torch.tensor(1.0 - step / block_steps, dtype=torch.float64)
            keep_masked = torch.round(mask_fraction(config.schedule, t_next) * span.double()).long()  # (batch,)
            if config.strategy == "remdm":
                # ReMDM: re-mask a share sigma of the tokens decoded so far, then reveal (at random, as MDLM's
                # ancestral step) enough masked ones that m(t_next) of the block stays masked.
                if config.remask_schedule == "loop":
                    # The loop holds the decoded share and re-masks eta of it each step; outside it, plain MDLM.
                    share = loop_masked_share(float(t_next), config.loop_on, config.loop_off, config.loop_alpha)
                    keep_masked = torch.round(share * span.double()).long()
                    in_loop = float(t_now) <= config.loop_on + 1e-9 and float(t_next) >= config.loop_off - 1e-9
                    sigma = config.remask_eta if in_loop else 0.0
                else:
                    alpha_t, alpha_s = 1 - mask_fraction(config.schedule, t_now), 1 - mask_fraction(config.schedule, t_next)
                    sigma = float(remdm_sigma(config.remask_schedule, config.remask_eta, alpha_t, alpha_s))
                decoded = block & ~masked
                # At most keep_masked can be hidden: the step reveals only positions that were masked before it.
                hide_count = torch.round(sigma * decoded.sum(-1).double()).long().minimum(keep_masked)
                if config.remask_schedule == "conf":  # the least confident decoded tokens go back first
                    hide = _reveal_top(-confidence, decoded, hide_count)
                else:
                    hide = _reveal_top(_uniform(ids.shape, generator, device), decoded, hide_count)
                left = block_masked.sum(-1)
                count = (left + hide_count - keep_masked).clamp(min=0).minimum(left)  # all at the last step: sigma is 0
                reveal = _reveal_top(_uniform(ids.shape, generator, device), block_masked, count)
                new_ids = torch.where(reveal, proposal, ids).masked_fill(hide, mask_token_id)
                confidence = torch.where(reveal, proposal_conf, confidence)
            elif config.strategy == "remask":
                # Predict every masked position, then hide a random `keep_masked` of the block's tokens again.
                new_ids = torch.where(block_masked, proposal, ids)
                confidence = torch.where(block_masked, proposal_conf, confidence)
                noise = _uniform(ids.shape, generator, device)
                hide = _reveal_top(noise, block, keep_masked)
                new_ids = new_ids.masked_fill(hide, mask_token_id)
            else:
                open_ = first = block_masked  # the positions this step may reveal; `first`: any one of them alone
                if ordered_ends:
                    ends = block_masked & (proposal == end_token_id)
                    open_ = block_masked & ~(ends & ~ends_after_text(masked, proposal, end_token_id))
                    # Never empty while anything is masked: the first masked position follows revealed text.
                    first = block_masked & ~(ends & ~_left(~masked))
                if config.strategy == "threshold":
                    reveal = open_ & (score >= config.threshold)
                    best = _reveal_top(score, first, torch.ones_like(span))
                    reveal |= best
                elif config.strategy == "adaptive":
                    # Every position at least `threshold` sure (the text's structure, in few passes), then as many
                    # randomly chosen others as the schedule still asks for, at least one: the uncertain positions
                    # are drawn in random order, as the model's own distribution would, not most-certain first.
                    reveal = open_ & (score >= config.threshold)
                    count = (block_masked.sum(-1) - keep_masked - reveal.sum(-1)).clamp_min(0)
                    count = count.maximum((~reveal.any(-1)).long())
                    pool = open_ & ~reveal
                    reveal |= _reveal_top(_uniform(ids.shape, generator, device), pool, count)
                    stuck = block_masked.any(-1) & ~reveal.any(-1)
                    reveal |= _reveal_top(_uniform(ids.shape, generator, device), first, torch.ones_like(span)) & stuck.unsqueeze(-1)
                elif config.strategy == "entropy-bounded":
                    count = entropy_bounded_count(spread, score, open_, config.entropy_budget)
                    reveal = _reveal_top(score, open_, count)
                else:
                    # At least one position per step: a rounded schedule can otherwise waste a forward pass.
                    left = block_masked.sum(-1)
                    count = torch.minimum((left - keep_masked).clamp_min(1), open_.sum(-1))
                    if config.strategy == "random":
                        scores = _uniform(ids.shape, generator, device)
                    else:
                        scores = score
                    reveal = _reveal_top(scores, open_, count)
                if ordered_ends:
                    # An end run is revealed from its start only: an end whose left neighbour stays masked waits.
                    now_ends = reveal & (proposal == end_token_id)
                    reveal = (reveal & ~now_ends) | anchored_runs(now_ends, ~masked | (reveal & ~now_ends))
                    stuck = block_masked.any(-1) & ~reveal.any(-1)  # every pick waited: take the best that may go
                    reveal |= _reveal_top(score, first, torch.ones_like(span)) & stuck.unsqueeze(-1)
                if step == block_steps:  # the step cap: whatever is left is filled now, never dropped
                    reveal = block_masked
                new_ids = torch.where(reveal, proposal, ids)
                confidence = torch.where(reveal, proposal_conf, confidence)
            now_masked = new_ids == mask_token_id
            revealed = masked & ~now_masked
            remasked = ~masked & now_masked
            confidence = confidence.masked_fill(now_masked, 0.0)
            ids = new_ids
            trajectory.append(_record(ids, revealed, remasked, confidence, top_ids, top_probs, columns if len(blocks) > 1 else None))
            if progress is not None:
                progress()
        if model_blocks and end_token_id is not None and (ids == end_token_id).any(-1).all():
            # Every row has ended: what follows an end token is end tokens (training's layout), so write them.
            rest = ids == mask_token_id
            if rest.any():
                ids = ids.masked_fill(rest, end_token_id)
                trajectory.append(_record(ids, rest, nothing, confidence.masked_fill(rest, 1.0)))
            break
    return SampleResult(ids=ids.cpu(), fixed=fixed.cpu(), trajectory=trajectory, nfe=nfe, guide_nfe=guide_nfe)


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + (1 + scale) (cond - uncond); scale 0 is the conditional logits (LLaDA,
    arXiv 2502.09992, eq. 16, where the unconditional pass sees the prompt masked)."""
    return uncond + (1.0 + scale) * (cond - uncond)


def product_of_experts(logits: torch.Tensor, guide_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) log p_diffusion + weight log p_guide, per row (rows, vocab): a distribution proportional to
    p_diffusion^(1 - weight) p_guide^weight. Tokens either expert rules out (-inf) stay ruled out."""
    return (1.0 - weight) * logits.float().log_softmax(-1) + weight * guide_logits.float().log_softmax(-1)


def step_logits(model, head, ids, attention_mask, where, prompt, mask_token_id: int, cfg_scale: float):
    """(logits at the `where` positions, forward passes spent): one pass, or with classifier-free guidance one
    batched pass over the sequences and their copies with the `prompt` masked, which counts as two."""
    if cfg_scale <= 0:
        return masked_logits(model, head, ids, attention_mask, where), 1
    pair = masked_logits(model, head, torch.cat([ids, ids.masked_fill(prompt, mask_token_id)]),
                         attention_mask.repeat(2, 1), torch.cat([where, where]))
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


def masked_logits(model, head, ids: torch.Tensor, attention_mask: torch.Tensor, where: torch.Tensor, **forward) -> torch.Tensor:
    """(where.sum(), vocab) logits at the `where` positions of one forward pass: with `head`
    (models.prediction_head) the encoder runs once and the head only at those positions; without, the whole model.
    `forward`: more arguments of the forward pass (block diffusion's position_ids)."""
    if hasattr(model, "logits_at"):  # a blocks.BlockModel: the current block over the cached prefix
        return model.logits_at(head, ids, where)
    if head is None:
        return model(input_ids=ids, attention_mask=attention_mask, **forward).logits[where]
    hidden = model.base_model(input_ids=ids, attention_mask=attention_mask, **forward).last_hidden_state
    return head(hidden[where])


def _uniform(shape, generator, device) -> torch.Tensor:
    # Drawn on the generator's device (a CPU generator cannot fill a CUDA tensor, nor the reverse), then moved.
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def _record(ids, revealed, remasked, confidence, candidates=None, candidate_probs=None, active=None) -> TrajectoryStep:
    cpu = lambda x: None if x is None else x.cpu()  # noqa: E731
    return TrajectoryStep(ids.cpu(), revealed.cpu(), remasked.cpu(), confidence.float().cpu(),
                          cpu(candidates), None if candidate_probs is None else candidate_probs.float().cpu(), cpu(active))


# ----------------------------------------------------------------------------- prompts in, text out

_INFILL_MASK = r"\[MASK\](?:\*(\d+))?"


def build_inputs(
    tokenizer, prefix: str = "", max_length: int = 48, num_samples: int = 1, infill: str | None = None, end_token: bool = False
):
    """(num_samples, seq) input ids laid out exactly as in training, masks where text is to be generated.

    Prefix mode: `<s> prefix <mask> ... <mask>` up to max_length. There is no end token between the prefix and
    the continuation: the model never saw one there, and one would make it start a new document.
    Infill mode: `<s>` followed by the template, each `[MASK]*n` becoming n masks; every other token is fixed.
    With `end_token` (line-by-line models, which saw every document end with it) a fixed end token follows the
    template when it fits.
    Raises ValueError with a one-line reason for a template without masks or a prompt that does not fit.
    """
    import re

    from tokenization import end_token_id, start_token_id

    start = start_token_id(tokenizer)
    if infill is not None:
        ids = [start]
        pieces = re.split(_INFILL_MASK, infill)
        # re.split alternates literal text and the captured count of each [MASK]
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                text = piece.rstrip() if i + 1 < len(pieces) else piece
                if text.strip():
                    ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids += [tokenizer.mask_token_id] * int(piece or 1)
        if tokenizer.mask_token_id not in ids:
            raise ValueError(f"infill template {infill!r} has no [MASK]; write [MASK] or [MASK]*n where text goes")
        if len(ids) > max_length:
            raise ValueError(f"infill template is {len(ids)} tokens, more than --max-length {max_length}")
        if end_token and len(ids) < max_length:
            ids.append(end_token_id(tokenizer))
    else:
        ids = [start] + (tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [])
        if len(ids) >= max_length:
            raise ValueError(f"prefix is {len(ids) - 1} tokens; it must be shorter than --max-length {max_length} - 1")
        ids += [tokenizer.mask_token_id] * (max_length - len(ids))
    return torch.tensor([ids] * num_samples)


def decode_texts(tokenizer, ids: torch.Tensor, stop_at_end: bool = True) -> list[str]:
    """Text of each row: the start token dropped, and (line-by-line models) everything from the end token on."""
    from tokenization import end_token_id, start_token_id

    start, end = start_token_id(tokenizer), end_token_id(tokenizer)
    texts = []
    for row in ids.tolist():
        row = row[1:] if row and row[0] == start else row
        if stop_at_end and end in row:
            row = row[: row.index(end)]
        texts.append(tokenizer.decode(row, skip_special_tokens=False).strip())
    return texts
