"""GenerationSettings: what to generate and how, checked once where it is built.
"""

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from textdiffusion.errors import SettingsError
from textdiffusion.masking.schedules import SCHEDULES
from textdiffusion.sampling.drawing import CONFIDENCE_MEASURES, SAMPLING_METHODS
from textdiffusion.sampling.sampler import SamplerConfig
from textdiffusion.sampling.strategies import (
    AUTO,
    REMASK_SCHEDULES,
    STRATEGIES,
    Strategy,
    auto_strategy,
    strategy_options,
)

logger = logging.getLogger(__name__)


SCHEDULE_CHOICES = Literal[tuple(SCHEDULES)]


STRATEGY_CHOICES = Literal[(AUTO, *STRATEGIES)]


SAMPLING_CHOICES = Literal[SAMPLING_METHODS]


CONFIDENCE_CHOICES = Literal[CONFIDENCE_MEASURES]


REMASK_CHOICES = Literal[REMASK_SCHEDULES]


@dataclass
class GenerationSettings:
    """What to generate and how; `check()` refuses a bad value with one line naming it and what is accepted, and
    `resolved()` gives the settings as sampled for one model (auto and the length resolved, checked), leaving these
    as they are."""

    prefix: str = field(default="", metadata={"help": "Text the generated text continues (kept fixed).", "aliases": ["--prompt"]})
    infill: str | None = field(
        default=None,
        metadata={"help": "Template to fill in, e.g. 'the [MASK]*4 sat on the [MASK] .': [MASK]*n is n masked tokens; the rest is kept."},
    )
    max_length: int = field(default=48, metadata={"help": "Total tokens per sample, prefix included. More than a line-by-line model's positions: generated within them (its documents end there), with a warning."})
    num_samples: int = field(default=4, metadata={"help": "Samples generated together as one batch."})
    steps: int | None = field(default=None, metadata={"help": "Denoising steps (forward passes). Default: max_length // 4; with --strategy threshold or entropy-bounded, max_length (a cap: they stop when nothing is masked; under a tighter cap they reveal the schedule's count whenever their own pace would not finish in time)."})
    schedule: SCHEDULE_CHOICES = field(
        default="cosine",
        metadata={"help": "Share of the span still masked after each step. log-linear is MDLM/SEDD's name for linear (alpha_t = 1 - t)."},
    )
    strategy: STRATEGY_CHOICES = field(
        default="auto",
        metadata={"help": "auto (the default): threshold for a model of line-by-line documents, adaptive for one of packed "
        "running text, where threshold decoding falls into repetition, confidence for packed text of characters "
        "(RESULTS.md, 'Which sampler'). remask: re-mask a random share each step. random: reveal random positions. confidence: reveal the most "
        "confident. threshold: reveal all above --threshold. entropy-bounded: reveal the most certain positions while "
        "their summed entropy, less the largest, stays within --entropy-budget (EB-sampler). remdm: ReMDM, decoded "
        "tokens are re-masked with probability sigma_t (--remask-schedule, --remask-eta). adaptive: reveal all above "
        "--threshold, then random others as the schedule asks (--steps passes at most)."},
    )
    sampling: SAMPLING_CHOICES = field(default="topk", metadata={"help": "How a token is drawn at each position."})
    top_k: int = field(default=50, metadata={"help": "k for --sampling topk.", "aliases": ["--k"]})
    top_p: float = field(default=0.9, metadata={"help": "p for --sampling nucleus.", "aliases": ["--p"]})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature (> 0) for topk and nucleus."})
    threshold: float = field(default=0.9, metadata={"help": "Confidence in (0, 1] above which --strategy threshold reveals a position."})
    block_size: int | None = field(default=None, metadata={"help": "Semi-autoregressive decoding: generate blocks of this many tokens left to right. A block-diffusion checkpoint (train.py --block-size) always uses its own."})
    kv_cache: bool = field(default=True, metadata={"help": "Block-diffusion checkpoints: compute each finished block's keys and values once and reuse them (false: recompute the whole prefix at every pass; the same tokens, slower)."})
    confidence: CONFIDENCE_CHOICES = field(
        default="prob",
        metadata={"help": "Certainty that orders confidence, threshold and entropy-bounded (and that --threshold is compared "
                  "with): prob (of the drawn token), margin (top-1 minus top-2 probability), entropy (1 - H / log vocab)."},
    )
    entropy_budget: float = field(default=1.0, metadata={"help": "entropy-bounded: nats of entropy one step may take on (> 0)."})
    remask_eta: float = field(default=0.05, metadata={"help": "remdm: eta in [0, 1], the re-masking strength."})
    remask_schedule: REMASK_CHOICES = field(
        default="cap", metadata={"help": "remdm: sigma_t = min(eta, sigma_max) (cap), eta * sigma_max (rescale), rescale "
                                 "spent on the least confident tokens first (conf), or loop: decode to --loop-alpha by "
                                 "t = --loop-on, re-mask eta of it per step until t = --loop-off, then finish."}
    )
    loop_on: float = field(default=0.55, metadata={"help": "remdm loop: the time t at which the loop starts (ReMDM's t_on)."})
    loop_off: float = field(default=0.05, metadata={"help": "remdm loop: the time t at which it ends (t_off < t_on)."})
    loop_alpha: float = field(default=0.9, metadata={"help": "remdm loop: the decoded share held during the loop (alpha_on)."})
    cfg_scale: float = field(
        default=0.0, metadata={"help": "Classifier-free guidance by the prompt (--prefix or the infill context): logits = "
                               "uncond + (1 + W) (cond - uncond), the unconditional pass seeing the prompt masked. Each step "
                               "then costs two forward passes. 0: off. Measured (RESULTS.md, classifier-free guidance): on the quick-test "
                               "models it over-copies the prompt's words, lowering adherence at every scale tried (0.25-2) and valid stories from 0.5 up."}
    )
    guide: str | None = field(
        default=None, metadata={"help": "A causal LM with the same tokenizer (e.g. results-ar/final-model) whose next-token "
                                "distribution joins the diffusion model's at every revealed position (product of experts)."}
    )
    guide_weight: float = field(default=0.5, metadata={"help": "--guide: its weight W in [0, 1]: p ~ p_diffusion^(1-W) p_guide^W."})
    rerank: int = field(default=1, metadata={"help": "--guide: draw this many candidates per sample and keep the one the guide "
                                             "finds most likely (per token)."})
    candidates: int = field(
        default=0, metadata={"help": "Top tokens (with probabilities) recorded at every position a step draws for, for the "
                             "viewer's hover; 0: none (a little faster)."}
    )
    end_after_text: bool = field(
        default=True, metadata={"help": "A model that ends documents with the end token (line by line): the confidence, "
                                "threshold and entropy-bounded strategies reveal an end token only right after revealed "
                                "text. False: in order of certainty like any token, which cascades from the tail and "
                                "makes every text the shortest it can be."}
    )
    sparse_logits: bool = field(
        default=True, metadata={"help": "Run the LM head only at the positions a step draws from (the same tokens, less "
                                "work per pass); false: every position's logits, as a plain forward pass."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed: the same seed gives the same text."})

    @property
    def resolved_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return STRATEGIES.get(self.strategy, Strategy).default_steps(self.max_length)

    def resolved(self, positions: int, line_by_line: bool, characters: bool = False) -> "GenerationSettings":
        """A checked copy of these settings as sampled from a model with `positions` positions: strategy auto
        becomes the measured best for this kind of model (strategies.auto_strategy), the length fits the model
        (fit_to_positions), and the steps are resolved."""
        settings = fit_to_positions(replace(self, strategy=auto_strategy(self.strategy, line_by_line, characters)),
                                    positions, line_by_line)
        settings.check(positions)
        return replace(settings, steps=settings.resolved_steps)

    def sampler(self) -> SamplerConfig:
        """The sampler core's settings (sample), steps resolved; the guide's weight counts only with a guide."""
        shared = {f.name: getattr(self, f.name) for f in fields(SamplerConfig) if f.name not in ("steps", "guide_weight")}
        return SamplerConfig(steps=self.resolved_steps, guide_weight=self.guide_weight if self.guide else 0.0, **shared)

    def changed(self, name: str) -> bool:
        """Whether field `name` differs from its default (GenerationSettings' own, whatever the subclass)."""
        return getattr(self, name) != GENERATION_DEFAULTS[name]

    def check(self, positions: int | None = None) -> None:
        """Raise SettingsError for the first bad value; with `positions` (the model's), --max-length is checked too."""
        for flag, value, choices in (
            ("schedule", self.schedule, SCHEDULES),
            ("strategy", self.strategy, (AUTO, *STRATEGIES)),
            ("sampling", self.sampling, SAMPLING_METHODS),
            ("confidence", self.confidence, CONFIDENCE_MEASURES),
            ("remask_schedule", self.remask_schedule, REMASK_SCHEDULES),
        ):
            if value not in choices:
                raise SettingsError(f"{flag} {value!r} is unknown; choose one of {', '.join(choices)}")
        if self.steps is not None and self.steps < 1:
            raise SettingsError(f"steps {self.steps} must be at least 1")
        if self.num_samples < 1:
            raise SettingsError(f"num_samples {self.num_samples} must be at least 1")
        if self.max_length < 2:
            raise SettingsError(f"max_length {self.max_length} must be at least 2 (the start token and one generated token)")
        if positions is not None and self.max_length > positions:
            raise SettingsError(
                f"max_length {self.max_length} is more than the model's {positions} positions; use max_length {positions} or less"
            )
        if self.top_k < 1:
            raise SettingsError(f"k {self.top_k} must be at least 1")
        if not 0 < self.top_p <= 1:
            raise SettingsError(f"p {self.top_p} must be in (0, 1]")
        if self.sampling in ("topk", "nucleus") and not self.temperature > 0:
            raise SettingsError(f"temperature {self.temperature} must be > 0 with sampling {self.sampling} (or use sampling greedy)")
        if not 0 < self.threshold <= 1:
            raise SettingsError(f"threshold {self.threshold} must be in (0, 1]")
        if self.block_size is not None and self.block_size < 1:
            raise SettingsError(f"block_size {self.block_size} must be at least 1")
        if self.cfg_scale < 0:
            raise SettingsError(f"cfg_scale {self.cfg_scale} must be 0 (off) or more")
        if self.cfg_scale > 0 and not self.prefix and self.infill is None:
            raise SettingsError(f"cfg_scale {self.cfg_scale} guides by a prompt; give prefix TEXT or infill TEMPLATE")
        if not 0 <= self.guide_weight <= 1:
            raise SettingsError(f"guide_weight {self.guide_weight} must be in [0, 1]")
        if self.rerank < 1:
            raise SettingsError(f"rerank {self.rerank} must be at least 1")
        if self.guide is None and (self.rerank > 1 or self.changed("guide_weight")):
            flag = "rerank" if self.rerank > 1 else "guide_weight"
            raise SettingsError(f"{flag} needs a guide: add guide CHECKPOINT (a causal LM such as results-ar/final-model)")
        if self.candidates < 0:
            raise SettingsError(f"candidates {self.candidates} must be 0 or more")
        if not self.entropy_budget > 0:
            raise SettingsError(f"entropy_budget {self.entropy_budget} must be > 0")
        if not 0 <= self.remask_eta <= 1:
            raise SettingsError(f"remask_eta {self.remask_eta} must be in [0, 1]")
        if not 0 < self.loop_off < self.loop_on < 1 or not 0 < self.loop_alpha < 1:
            raise SettingsError(f"loop_off {self.loop_off}, loop_on {self.loop_on} and loop_alpha {self.loop_alpha} must "
                             "satisfy 0 < off < on < 1 and 0 < alpha < 1")
        if self.remask_schedule != "loop" and any(self.changed(name) for name in ("loop_on", "loop_off", "loop_alpha")):
            raise SettingsError("loop_on, loop_off and loop_alpha apply to remask_schedule loop only")
        for name, strategies in strategy_options().items():
            if self.changed(name) and self.strategy not in strategies:
                raise SettingsError(
                    f"{name} {getattr(self, name)} has no meaning with strategy {self.strategy}; it applies to "
                    f"strategy {' / '.join(strategies)}"
                )
        output = getattr(self, "output", None)
        if output and Path(output).is_dir():
            raise SettingsError(f"output {output} is a directory; give a file name such as {Path(output) / 'samples.jsonl'}")


GENERATION_DEFAULTS = {f.name: f.default for f in fields(GenerationSettings)}


def fit_to_positions(settings: GenerationSettings, positions: int, line_by_line: bool) -> GenerationSettings:
    """A line-by-line model ends every document within the positions it was trained on, so a longer max_length
    (a cap on the length, not a target) is met by generating in those positions: a copy of `settings` whose
    max_length is `positions`, with a warning. A model of packed text gets no such cap; check() refuses the length
    there."""
    if not line_by_line or settings.max_length <= positions:
        return settings
    logger.warning("--max-length %d: the model has %d positions and was trained line by line, each document ending "
                   "within them; generating %d tokens", settings.max_length, positions, positions)
    return replace(settings, max_length=positions)
