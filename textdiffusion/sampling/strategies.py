"""Unmasking strategies: given one read-only view of a step, which masked positions to reveal and which decoded
ones to hide again. STRATEGIES, from each name to its class, is the one table of them; the loop never looks at a
name. End-after-text is a filter around any certainty-ordered strategy.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from textdiffusion.errors import SettingsError
from textdiffusion.masking.schedules import mask_fraction
from textdiffusion.sampling.drawing import entropy

AUTO = "auto"  # not a strategy: the measured best for the kind of model (auto_strategy)


REMASK_SCHEDULES = ("cap", "rescale", "conf", "loop")  # ReMDM's sigma_t (Wang et al. 2025, arXiv 2503.00307, sec. 4)


@dataclass(frozen=True)
class StepView:
    """One step as a strategy sees it; every tensor (batch, seq) unless noted, none to be written to."""

    ids: torch.Tensor  # the state before the step
    masked: torch.Tensor  # ids == mask, in every block
    block: torch.Tensor  # the positions the current block generates
    todo: torch.Tensor  # the masked positions of the current block
    open: torch.Tensor  # those the step may reveal (all of todo unless a filter holds some back)
    first: torch.Tensor  # those any one of which may be revealed alone (the fallback when nothing else goes)
    proposal: torch.Tensor  # the token drawn at every todo position (ids elsewhere)
    proposal_conf: torch.Tensor  # its probability under the distribution it was drawn from
    score: torch.Tensor  # its certainty by SamplerConfig.confidence (0 outside todo)
    logits: torch.Tensor  # (todo.sum(), vocab) the distributions drawn from, bans and guidance included
    confidence: torch.Tensor  # the probability each decoded token of the block was drawn with (0 where masked)
    keep_masked: torch.Tensor  # (batch,) how many of the block the schedule keeps masked after this step
    span: torch.Tensor  # (batch,) how many positions the block generates
    t_now: torch.Tensor  # the step goes from time t_now to t_next (float64 scalars)
    t_next: torch.Tensor
    step: int  # 1 .. steps, within the block
    steps: int
    noise: Callable[[], torch.Tensor]  # a fresh (batch, seq) uniform draw from the sampler's generator

    @property
    def steps_left(self) -> int:
        """Steps of the block after this one."""
        return self.steps - self.step

    def entropies(self) -> torch.Tensor:
        """(batch, seq) the entropy in nats of each todo position's distribution (0 elsewhere)."""
        spread = torch.zeros(self.ids.shape, device=self.ids.device)
        spread[self.todo] = entropy(self.logits)
        return spread


@dataclass(frozen=True)
class Decision:
    reveal: torch.Tensor  # (batch, seq) masked positions that take their proposal
    hide: torch.Tensor | None = None  # (batch, seq) decoded positions masked again (None: none)


def top_scoring(scores: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per row, the `counts[row]` candidate positions with the highest score. All (batch, seq) except counts."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.size(-1), device=order.device).expand_as(order))
    return (rank < counts.unsqueeze(-1)) & candidates


def _one_each(view: StepView) -> torch.Tensor:
    return torch.ones_like(view.span)


def schedule_fill(view: StepView, sure: torch.Tensor) -> torch.Tensor:
    """Adaptive's step: the `sure` positions, then as many randomly chosen others as the schedule still asks for,
    at least one: the uncertain positions are drawn in random order, as the model's own distribution would, not
    most-certain first."""
    count = (view.todo.sum(-1) - view.keep_masked - sure.sum(-1)).clamp_min(0)
    count = count.maximum((~sure.any(-1)).long())
    reveal = sure | top_scoring(view.noise(), view.open & ~sure, count)
    stuck = view.todo.any(-1) & ~reveal.any(-1)
    return reveal | top_scoring(view.noise(), view.first, _one_each(view)) & stuck.unsqueeze(-1)


def within_budget(view: StepView, sure: torch.Tensor, reveal: torch.Tensor) -> torch.Tensor:
    """A strategy's own choice `reveal` (its `sure` positions and its at-least-one pick), or, in the rows where what
    that leaves masked would not fit in the block's remaining steps at this step's pace, the schedule's count as
    adaptive fills it (schedule_fill): a step cap is shared out instead of the last step filling the rest of the
    block at once. The uncertain positions then go in random order: on the quick-test model at 20 steps, topping
    `reveal` up to the schedule's count most certain first gave threshold 0.05 valid stories, random first 0.11,
    this 0.34 (adaptive 0.32; experiments/sampler_quality.py --steps 20 24, RESULTS.md)."""
    picked = reveal.sum(-1)
    behind = view.todo.sum(-1) - picked > picked * view.steps_left
    if not behind.any():
        return reveal
    return torch.where(behind.unsqueeze(-1), schedule_fill(view, sure), reveal)


class Strategy:
    """Which positions a step reveals and hides. `options`: the SamplerConfig fields that mean something only with
    the strategies that declare them (GenerationSettings refuses them, set, with any other)."""

    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()
    certainty_ordered: ClassVar[bool] = True  # most certain first: end-after-text applies
    until_done: ClassVar[bool] = False  # its steps are a cap: the block ends once nothing in it is masked

    def __init__(self, config):
        self.config = config

    @staticmethod
    def default_steps(max_length: int) -> int:
        return max(1, max_length // 4)

    def decide(self, view: StepView) -> Decision:
        raise NotImplementedError


class Remask(Strategy):
    """Predict every masked position, then hide a random `keep_masked` of the block's tokens again."""

    name, certainty_ordered = "remask", False

    def decide(self, view):
        return Decision(view.todo, top_scoring(view.noise(), view.block, view.keep_masked))


class Confidence(Strategy):
    """Reveal the most certain positions, as many as the schedule asks for."""

    name, options = "confidence", ("confidence",)

    def order(self, view: StepView) -> torch.Tensor:
        return view.score

    def decide(self, view):
        # At least one position per step: a rounded schedule can otherwise waste a forward pass.
        count = torch.minimum((view.todo.sum(-1) - view.keep_masked).clamp_min(1), view.open.sum(-1))
        return Decision(top_scoring(self.order(view), view.open, count))


class Random(Confidence):
    """Reveal random positions, as many as the schedule asks for (MDLM's ancestral step)."""

    name, options, certainty_ordered = "random", (), False

    def order(self, view):
        return view.noise()


class Threshold(Strategy):
    """Reveal every position at least `threshold` sure, and the most certain one (Fast-dLLM); under a step cap its
    own pace cannot meet, the schedule's count (within_budget)."""

    name, options, until_done = "threshold", ("confidence",), True

    @staticmethod
    def default_steps(max_length: int) -> int:
        return max_length  # a cap: measured best on the built-in corpus (experiments/sampler_quality.py)

    def decide(self, view):
        sure = view.open & (view.score >= self.config.threshold)
        return Decision(within_budget(view, sure, sure | top_scoring(view.score, view.first, _one_each(view))))


def entropy_fits(entropies: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor, budget: float) -> torch.Tensor:
    """(batch,) EB-sampler's rule (arXiv 2505.24857): the length of the longest prefix of the candidates, in order of
    `scores` (most certain first), whose entropies sum, less the largest of them, to at most `budget` (0 when even
    the first does not fit). All arguments but `budget` are (batch, seq)."""
    order = scores.masked_fill(~candidates, float("-inf")).argsort(-1, descending=True)
    ordered = entropies.gather(-1, order).masked_fill(~candidates.gather(-1, order), float("nan"))
    spent = ordered.nan_to_num(0.0).cumsum(-1) - ordered.nan_to_num(0.0).cummax(-1).values  # never decreases
    return ((spent <= budget) & ~ordered.isnan()).sum(-1)


def entropy_bounded_count(entropies: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor, budget: float) -> torch.Tensor:
    """(batch,) how many candidates EB-sampler reveals: entropy_fits, at least one per row with a candidate."""
    return entropy_fits(entropies, scores, candidates, budget).clamp_min(1).minimum(candidates.sum(-1))


class EntropyBounded(Threshold):
    """Reveal the most certain positions while their summed entropy, less the largest, stays within the budget
    (EB-sampler); under a step cap its own pace cannot meet, the schedule's count (within_budget)."""

    name, options = "entropy-bounded", ("confidence", "entropy_budget")

    def decide(self, view):
        fits = entropy_fits(view.entropies(), view.score, view.open, self.config.entropy_budget)
        sure = top_scoring(view.score, view.open, fits)
        count = fits.clamp_min(1).minimum(view.open.sum(-1))  # entropy_bounded_count, from the one prefix computed
        return Decision(within_budget(view, sure, top_scoring(view.score, view.open, count)))


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


class ReMDM(Strategy):
    """ReMDM: re-mask a share sigma of the tokens decoded so far, then reveal (at random, as MDLM's ancestral step)
    enough masked ones that the schedule's share of the block stays masked."""

    name, certainty_ordered = "remdm", False
    options = ("remask_eta", "remask_schedule", "loop_on", "loop_off", "loop_alpha")

    def keep_and_sigma(self, view: StepView) -> tuple[torch.Tensor, float]:
        config = self.config
        if config.remask_schedule == "loop":
            # The loop holds the decoded share and re-masks eta of it each step; outside it, plain MDLM.
            share = loop_masked_share(float(view.t_next), config.loop_on, config.loop_off, config.loop_alpha)
            in_loop = float(view.t_now) <= config.loop_on + 1e-9 and float(view.t_next) >= config.loop_off - 1e-9
            return torch.round(share * view.span.double()).long(), config.remask_eta if in_loop else 0.0
        alpha_t, alpha_s = (1 - mask_fraction(config.schedule, t) for t in (view.t_now, view.t_next))
        return view.keep_masked, float(remdm_sigma(config.remask_schedule, config.remask_eta, alpha_t, alpha_s))

    def decide(self, view):
        keep_masked, sigma = self.keep_and_sigma(view)
        decoded = view.block & ~view.masked
        # At most keep_masked can be hidden: the step reveals only positions that were masked before it.
        hide_count = torch.round(sigma * decoded.sum(-1).double()).long().minimum(keep_masked)
        # conf: the least confident decoded tokens go back first; otherwise random ones.
        order = -view.confidence if self.config.remask_schedule == "conf" else view.noise()
        hide = top_scoring(order, decoded, hide_count)
        left = view.todo.sum(-1)
        count = (left + hide_count - keep_masked).clamp(min=0).minimum(left)  # all at the last step: sigma is 0
        return Decision(top_scoring(view.noise(), view.todo, count), hide)


class Adaptive(Strategy):
    """Every position at least `threshold` sure (the text's structure, in few passes), then random others as the
    schedule asks (schedule_fill)."""

    name, options, until_done = "adaptive", ("confidence",), True

    def decide(self, view):
        return Decision(schedule_fill(view, view.open & (view.score >= self.config.threshold)))


STRATEGIES: dict[str, type[Strategy]] = {
    strategy.name: strategy for strategy in (Remask, Random, Confidence, Threshold, EntropyBounded, ReMDM, Adaptive)
}


def strategy_options() -> dict[str, tuple[str, ...]]:
    """Each strategy-only option and the strategies that declare it (auto counts as every one it may become)."""
    options = {}
    for name, strategy in STRATEGIES.items():
        for option in strategy.options:
            options[option] = (*options.get(option, ()), name)
    return {option: (AUTO, *names) if set(AUTO_CHOICES) & set(names) else names for option, names in options.items()}


AUTO_CHOICES = ("threshold", "adaptive", "confidence")  # what auto_strategy may pick


def auto_strategy(strategy: str, line_by_line: bool, characters: bool = False) -> str:
    """`strategy`, or for AUTO the measured best for this kind of model: certainty first (threshold) for short
    line-by-line documents, whose structure it keeps; adaptive for packed running text, on which revealing the
    most certain position first repeats words (entropy 2.1-2.2 against 3.8-3.9 for real text); on packed text of
    single characters the most confident positions first (confidence), which keeps the entropy of text there at
    less than half adaptive's judge perplexity."""
    if strategy != AUTO:
        return strategy
    threshold, adaptive, confidence = AUTO_CHOICES
    return threshold if line_by_line else confidence if characters else adaptive


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


class EndAfterText(Strategy):
    """A filter around a certainty-ordered strategy for a model that ends documents with `end_token_id`: an end
    token is revealed only as part of a run that starts right after revealed text (ends_after_text)."""

    def __init__(self, inner: Strategy, end_token_id: int):
        super().__init__(inner.config)
        self.inner, self.end = inner, end_token_id
        self.name, self.until_done = inner.name, inner.until_done

    def decide(self, view):
        ends = view.todo & (view.proposal == self.end)
        held = ends & ~ends_after_text(view.masked, view.proposal, self.end)
        # Never empty while anything is masked: the first masked position follows revealed text.
        first = view.todo & ~(ends & ~_left(~view.masked))
        decision = self.inner.decide(replace(view, open=view.todo & ~held, first=first))
        # An end run is revealed from its start only: an end whose left neighbour stays masked waits.
        now_ends = decision.reveal & (view.proposal == self.end)
        others = decision.reveal & ~now_ends
        reveal = others | anchored_runs(now_ends, ~view.masked | others)
        stuck = view.todo.any(-1) & ~reveal.any(-1)  # every pick waited: take the best that may go
        return Decision(reveal | top_scoring(view.score, first, _one_each(view)) & stuck.unsqueeze(-1), decision.hide)


def strategy_for(config, end_token_id: int | None = None) -> Strategy:
    """The strategy SamplerConfig `config` names; with `end_token_id` and config.end_after_text, a certainty-ordered
    one is wrapped in EndAfterText."""
    if config.strategy not in STRATEGIES:
        raise SettingsError(f"strategy {config.strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[config.strategy](config)
    if end_token_id is not None and config.end_after_text and strategy.certainty_ordered:
        return EndAfterText(strategy, end_token_id)
    return strategy
