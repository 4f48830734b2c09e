"""The one iterative-unmasking sampler: walks t from 1 to 0 and returns its trajectory.
"""

from dataclasses import dataclass, field

import torch

from textdiffusion.masking.schedules import mask_fraction
from textdiffusion.models.heads import prediction_head
from textdiffusion.sampling.drawing import certainty, draw_tokens, entropy
from textdiffusion.sampling.guidance import guided_by, step_logits

STRATEGIES = ("remask", "random", "confidence", "threshold", "entropy-bounded", "remdm", "adaptive")


REMASK_SCHEDULES = ("cap", "rescale", "conf", "loop")  # ReMDM's sigma_t (Wang et al. 2025, arXiv 2503.00307, sec. 4)


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


def _uniform(shape, generator, device) -> torch.Tensor:
    # Drawn on the generator's device (a CPU generator cannot fill a CUDA tensor, nor the reverse), then moved.
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def _record(ids, revealed, remasked, confidence, candidates=None, candidate_probs=None, active=None) -> TrajectoryStep:
    cpu = lambda x: None if x is None else x.cpu()  # noqa: E731
    return TrajectoryStep(ids.cpu(), revealed.cpu(), remasked.cpu(), confidence.float().cpu(),
                          cpu(candidates), None if candidate_probs is None else candidate_probs.float().cpu(), cpu(active))
