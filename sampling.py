"""Generating text: the one diffusion generation call and the one autoregressive sampler.

    checkpoint = models.load_checkpoint("results/final-model")
    out = sampling.generate(checkpoint, GenerationSettings(prefix="tom found", num_samples=8, seed=1))
    out.texts, out.nfe, out.seconds, out.trajectory

`GenerationSettings` is what decides the text (prompt or infill template, length, count, sampler, seed) and checks
itself; the command-line `config.SamplingArguments` is this class plus where the model is and what to print.
`sample_autoregressive` draws from a causal LM (the matched GPT-2) with the same token-drawing rule
(`diffusion.draw_tokens`), timing each token: compare_models.py and the metrics both use it.
"""

import inspect
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from itertools import groupby
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

import blocks
import diffusion
from cli import UsageError
from likelihood import same_tokenizer
from models import Checkpoint, load_causal_lm, max_positions
from tokenization import end_token_id, is_character_level, special_token_ids, start_token_id

logger = logging.getLogger(__name__)

MASK_SYMBOL = "_"  # how a still-masked position is shown in the step-by-step view

SCHEDULE_CHOICES = Literal[tuple(diffusion.SCHEDULES)]
STRATEGY_CHOICES = Literal[("auto", *diffusion.STRATEGIES)]
SAMPLING_CHOICES = Literal[diffusion.SAMPLING_METHODS]
CONFIDENCE_CHOICES = Literal[diffusion.CONFIDENCE_MEASURES]
REMASK_CHOICES = Literal[diffusion.REMASK_SCHEDULES]
# Options that mean something only with some strategies: (option, the strategies it applies to). Setting one
# away from its default with another strategy is refused.
STRATEGY_OPTIONS = (
    ("confidence", ("auto", "confidence", "threshold", "entropy-bounded", "adaptive")),
    ("entropy_budget", ("entropy-bounded",)),
    ("remask_eta", ("remdm",)),
    ("remask_schedule", ("remdm",)),
    ("loop_on", ("remdm",)),
    ("loop_off", ("remdm",)),
    ("loop_alpha", ("remdm",)),
)


@dataclass
class GenerationSettings:
    """What to generate and how; `check()` refuses a bad value with one line naming it and what is accepted."""

    prefix: str = field(default="", metadata={"help": "Text the generated text continues (kept fixed).", "aliases": ["--prompt"]})
    infill: str | None = field(
        default=None,
        metadata={"help": "Template to fill in, e.g. 'the [MASK]*4 sat on the [MASK] .': [MASK]*n is n masked tokens; the rest is kept."},
    )
    max_length: int = field(default=48, metadata={"help": "Total tokens per sample, prefix included. More than a line-by-line model's positions: generated within them (its documents end there), with a warning."})
    num_samples: int = field(default=4, metadata={"help": "Samples generated together as one batch."})
    steps: int | None = field(default=None, metadata={"help": "Denoising steps (forward passes). Default: max_length // 4; with --strategy threshold or entropy-bounded, max_length (a cap: they stop when nothing is masked)."})
    schedule: SCHEDULE_CHOICES = field(
        default="cosine",
        metadata={"help": "Share of the span still masked after each step. log-linear is MDLM/SEDD's name for linear (alpha_t = 1 - t)."},
    )
    strategy: STRATEGY_CHOICES = field(
        default="auto",
        metadata={"help": "auto (the default): threshold for a model of line-by-line documents, adaptive for one of packed "
        "running text, where threshold decoding falls into repetition, confidence for packed text of characters "
        "(RESULTS.md, 'The default sampler by kind of model'). remask: re-mask a random share each step. random: reveal random positions. confidence: reveal the most "
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
        # Threshold decoding's steps are only a cap (it stops once nothing is masked); measured best on the built-in
        # corpus in experiments/sampler_quality.py (RESULTS.md).
        if self.steps is not None:
            return self.steps
        return self.max_length if self.strategy in ("threshold", "entropy-bounded") else max(1, self.max_length // 4)

    def resolve_strategy(self, line_by_line: bool, characters: bool = False) -> None:
        """--strategy auto becomes the measured best for this kind of model: certainty first (threshold) for short
        line-by-line documents, whose structure it keeps; adaptive for packed running text, on which revealing
        the most certain position first repeats words (entropy 2.1-2.2 against 3.8-3.9 for real text); on packed
        text of single characters the most confident positions first (confidence), which keeps the entropy of
        text there at less than half adaptive's judge perplexity."""
        if self.strategy == "auto":
            self.strategy = "threshold" if line_by_line else "confidence" if characters else "adaptive"

    def sampler(self) -> diffusion.SamplerConfig:
        """The sampler core's settings (diffusion.sample), steps resolved; the guide's weight counts only with a guide."""
        shared = {f.name: getattr(self, f.name) for f in fields(diffusion.SamplerConfig) if f.name not in ("steps", "guide_weight")}
        return diffusion.SamplerConfig(steps=self.resolved_steps, guide_weight=self.guide_weight if self.guide else 0.0, **shared)

    def changed(self, name: str) -> bool:
        """Whether field `name` differs from its default (GenerationSettings' own, whatever the subclass)."""
        return getattr(self, name) != GENERATION_DEFAULTS[name]

    def check(self, positions: int | None = None) -> None:
        """Raise UsageError for the first bad value; with `positions` (the model's), --max-length is checked too."""
        for flag, value, choices in (
            ("--schedule", self.schedule, diffusion.SCHEDULES),
            ("--strategy", self.strategy, ("auto", *diffusion.STRATEGIES)),
            ("--sampling", self.sampling, diffusion.SAMPLING_METHODS),
            ("--confidence", self.confidence, diffusion.CONFIDENCE_MEASURES),
            ("--remask-schedule", self.remask_schedule, diffusion.REMASK_SCHEDULES),
        ):
            if value not in choices:
                raise UsageError(f"{flag} {value!r} is unknown; choose one of {', '.join(choices)}")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps {self.steps} must be at least 1")
        if self.num_samples < 1:
            raise UsageError(f"--num-samples {self.num_samples} must be at least 1")
        if self.max_length < 2:
            raise UsageError(f"--max-length {self.max_length} must be at least 2 (the start token and one generated token)")
        if positions is not None and self.max_length > positions:
            raise UsageError(
                f"--max-length {self.max_length} is more than the model's {positions} positions; use --max-length {positions} or less"
            )
        if self.top_k < 1:
            raise UsageError(f"--k {self.top_k} must be at least 1")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--p {self.top_p} must be in (0, 1]")
        if self.sampling in ("topk", "nucleus") and not self.temperature > 0:
            raise UsageError(f"--temperature {self.temperature} must be > 0 with --sampling {self.sampling} (or use --sampling greedy)")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"--threshold {self.threshold} must be in (0, 1]")
        if self.block_size is not None and self.block_size < 1:
            raise UsageError(f"--block-size {self.block_size} must be at least 1")
        if self.cfg_scale < 0:
            raise UsageError(f"--cfg-scale {self.cfg_scale} must be 0 (off) or more")
        if self.cfg_scale > 0 and not self.prefix and self.infill is None:
            raise UsageError(f"--cfg-scale {self.cfg_scale} guides by a prompt; give --prefix TEXT or --infill TEMPLATE")
        if not 0 <= self.guide_weight <= 1:
            raise UsageError(f"--guide-weight {self.guide_weight} must be in [0, 1]")
        if self.rerank < 1:
            raise UsageError(f"--rerank {self.rerank} must be at least 1")
        if self.guide is None and (self.rerank > 1 or self.changed("guide_weight")):
            flag = "--rerank" if self.rerank > 1 else "--guide-weight"
            raise UsageError(f"{flag} needs a guide: add --guide CHECKPOINT (a causal LM such as results-ar/final-model)")
        if self.candidates < 0:
            raise UsageError(f"--candidates {self.candidates} must be 0 or more")
        if not self.entropy_budget > 0:
            raise UsageError(f"--entropy-budget {self.entropy_budget} must be > 0")
        if not 0 <= self.remask_eta <= 1:
            raise UsageError(f"--remask-eta {self.remask_eta} must be in [0, 1]")
        if not 0 < self.loop_off < self.loop_on < 1 or not 0 < self.loop_alpha < 1:
            raise UsageError(f"--loop-off {self.loop_off}, --loop-on {self.loop_on} and --loop-alpha {self.loop_alpha} must "
                             "satisfy 0 < off < on < 1 and 0 < alpha < 1")
        if self.remask_schedule != "loop" and any(self.changed(name) for name in ("loop_on", "loop_off", "loop_alpha")):
            raise UsageError("--loop-on, --loop-off and --loop-alpha apply to --remask-schedule loop only")
        for name, strategies in STRATEGY_OPTIONS:
            if self.changed(name) and self.strategy not in strategies:
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    f"{flag} {getattr(self, name)} has no meaning with --strategy {self.strategy}; it applies to "
                    f"--strategy {' / '.join(strategies)}"
                )
        output = getattr(self, "output", None)
        if output and Path(output).is_dir():
            raise UsageError(f"--output {output} is a directory; give a file name such as {Path(output) / 'samples.jsonl'}")


GENERATION_DEFAULTS = {f.name: f.default for f in fields(GenerationSettings)}


# ----------------------------------------------------------------------------- diffusion


@dataclass
class Generation:
    """What one generate() call produced: the sampler's result (ids, fixed positions, trajectory, nfe), the texts
    and the wall-clock seconds of the sampling loop."""

    result: diffusion.SampleResult
    texts: list[str]
    seconds: float

    @property
    def ids(self) -> torch.Tensor:
        return self.result.ids

    @property
    def trajectory(self) -> list[diffusion.TrajectoryStep]:
        return self.result.trajectory

    @property
    def nfe(self) -> int:
        return self.result.nfe

    @property
    def generated_tokens(self) -> int:
        """Positions the sampler filled, all samples together."""
        return int((~self.result.fixed).sum())


def banned_token_ids(tokenizer, allow_end: bool) -> list[int]:
    """Every special token (mask, padding, start, unknown ...), except the end token when it may be sampled.

    A line-by-line model learned to end each document with the end token, so it may place it where the text
    should stop; a model trained on packed text never saw a document end inside its window.
    """
    end = end_token_id(tokenizer)
    return [i for i in special_token_ids(tokenizer) if not (allow_end and i == end)]


def load_guide(path: str, checkpoint: Checkpoint, max_length: int):
    """(causal LM, tokenizer) for --guide, on the checkpoint's device: refused unless it shares the diffusion
    model's tokenizer and fits --max-length."""
    model, tokenizer = load_causal_lm(path)
    if not same_tokenizer(tokenizer, checkpoint.tokenizer):
        raise UsageError(f"--guide {path} has another tokenizer than {checkpoint.path}; the guide must share it "
                         "(train it with train.py --objective ar on the same data, as the matched GPT-2 is)")
    if max_length > max_positions(model):
        raise UsageError(f"--guide {path} reads at most {max_positions(model)} tokens; use --max-length {max_positions(model)} or less")
    return model.to(checkpoint.device).eval(), tokenizer


@torch.no_grad()
def guide_nll(guide, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """(batch,) the guide's mean negative log-likelihood of the `scored` tokens of `ids` (both (batch, seq))."""
    logp = guide(input_ids=ids.to(next(guide.parameters()).device)).logits[:, :-1].float().log_softmax(-1).cpu()
    token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # log p(token j | tokens before j)
    scored = scored[:, 1:]
    return -(token * scored).sum(-1) / scored.sum(-1).clamp_min(1)


def fit_to_positions(settings: GenerationSettings, positions: int, line_by_line: bool) -> None:
    """A line-by-line model ends every document within the positions it was trained on, so a longer --max-length
    (a cap on the length, not a target) is met by generating in those positions: `settings.max_length` becomes
    `positions`, with a warning. A model of packed text gets no such cap; check() refuses the length there."""
    if line_by_line and settings.max_length > positions:
        logger.warning("--max-length %d: the model has %d positions and was trained line by line, each document ending "
                       "within them; generating %d tokens", settings.max_length, positions, positions)
        settings.max_length = positions


def check_block_settings(settings: GenerationSettings, block_size: int) -> None:
    """UsageError for settings a block-diffusion checkpoint cannot sample with."""
    if settings.block_size not in (None, block_size):
        raise UsageError(f"--block-size {settings.block_size}: this checkpoint was trained with blocks of {block_size} "
                         f"and samples with those; use --block-size {block_size} or leave it out")
    if settings.cfg_scale > 0:
        raise UsageError(f"--cfg-scale {settings.cfg_scale}: classifier-free guidance is not available for a block-diffusion "
                         "checkpoint (its prompt is in the key/value cache); leave it out")


def generate(checkpoint: Checkpoint, settings: GenerationSettings, progress: bool | None = None) -> Generation:
    """Sample `settings.num_samples` texts from `checkpoint`: the generation loop every script uses.

    With `settings.guide` the causal LM guides every step and, with `settings.rerank` N > 1, N candidates are
    drawn per sample and the guide keeps the one it finds most likely per token.
    `progress`: None shows a tqdm bar on a terminal for runs longer than a second, True always, False never.
    """
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    line_by_line = checkpoint.line_by_line
    settings.resolve_strategy(line_by_line, is_character_level(tokenizer))
    fit_to_positions(settings, max_positions(model), line_by_line)
    settings.check(max_positions(model))
    if checkpoint.block_size:
        check_block_settings(settings, checkpoint.block_size)
        model = blocks.BlockModel(model, checkpoint.block_size, cache=settings.kv_cache)
    guide = load_guide(settings.guide, checkpoint, settings.max_length)[0] if settings.guide else None
    rows = settings.num_samples * settings.rerank
    try:
        input_ids = diffusion.build_inputs(
            tokenizer, settings.prefix, settings.max_length, rows, settings.infill, end_token=line_by_line
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    # In an infill template the document's end is fixed by the template, so no end token inside the gaps.
    allow_end = line_by_line and settings.infill is None
    banned = banned_token_ids(tokenizer, allow_end=allow_end)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    config = settings.sampler()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    bar = tqdm(total=config.steps, desc="sampling", unit="step", delay=1.0, leave=False,
               disable=None if progress is None else not progress)
    start = time.perf_counter()
    with autocast:
        result = diffusion.sample(model, input_ids, tokenizer.mask_token_id, config, banned, generator, progress=bar.update,
                                  guide=guide, end_token_id=end_token_id(tokenizer) if allow_end else None)
        if settings.rerank > 1:
            end = end_token_id(tokenizer)
            # Score each candidate's text: the generated positions up to and including its first end token.
            scored = ~result.fixed & (result.ids == end).cumsum(-1).sub((result.ids == end).long()).eq(0) if line_by_line else ~result.fixed
            nll = guide_nll(guide, result.ids, scored).view(settings.num_samples, settings.rerank)
            best = nll.argmin(-1) + torch.arange(settings.num_samples) * settings.rerank
            result = result.rows(best)
            result.guide_nfe += 1
    synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return Generation(result, diffusion.decode_texts(tokenizer, result.ids, stop_at_end=line_by_line), seconds)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_state(tokenizer, ids: torch.Tensor, stop_at_end: bool = True, mask_symbol: str = MASK_SYMBOL) -> str:
    """One row of ids (seq,) as text with each masked position shown as `mask_symbol`."""
    row = ids.tolist()
    if row and row[0] == start_token_id(tokenizer):
        row = row[1:]
    end = end_token_id(tokenizer)
    if stop_at_end and end in row:
        row = row[: row.index(end)]
    text = ""
    for is_mask, run_ in groupby(row, key=lambda i: i == tokenizer.mask_token_id):
        run_ = list(run_)
        piece = " ".join([mask_symbol] * len(run_)) if is_mask else tokenizer.decode(run_, clean_up_tokenization_spaces=False)
        if text and not text[-1].isspace() and not piece[:1].isspace():
            text += " "  # masks stand for whole tokens; keep them apart from their neighbours
        text += piece
    return text.strip()


# ----------------------------------------------------------------------------- autoregressive


@dataclass
class ARGeneration:
    """Samples of a causal LM: `prompt` ids (start token first), each row's generated ids (up to and including
    the end token when it came), the texts (prompt + generation, special tokens dropped), the seconds after each
    forward pass (`times[0]` = 0, `times[k]` when token k was drawn) and the forward passes made."""

    prompt: list[int]
    generated: list[list[int]]
    texts: list[str]
    times: list[float]
    forward_passes: int

    @property
    def seconds(self) -> float:
        return self.times[-1]

    @property
    def generated_tokens(self) -> int:
        return sum(len(row) for row in self.generated)


def warm_up(model) -> None:
    """One untimed forward pass, so lazy initialisation is not billed to the first timed step."""
    device = next(model.parameters()).device
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 4), dtype=torch.long, device=device))
    synchronize(device)


@torch.no_grad()
def sample_autoregressive(model, tokenizer, settings: GenerationSettings) -> ARGeneration:
    """`settings.num_samples` continuations of `settings.prefix`, token by token with the KV cache, drawn by
    `settings.sampling` (greedy/topk/nucleus, temperature) with a generator seeded by `settings.seed`; each row
    stops at the end token, all stop at `settings.max_length` tokens (start token included). No special token is
    drawn inside the text except the end token that stops it, as in the diffusion sampler."""
    device = next(model.parameters()).device
    start_id, end_id = start_token_id(tokenizer), end_token_id(tokenizer)
    prompt = [start_id] + (tokenizer(settings.prefix, add_special_tokens=False)["input_ids"] if settings.prefix else [])
    budget = min(settings.max_length, max_positions(model)) - len(prompt)
    if budget < 1:
        raise UsageError(f"the prompt is {len(prompt)} tokens for the GPT-2 model; --max-length {settings.max_length} leaves no room")
    banned = torch.tensor([i for i in special_token_ids(tokenizer) if i != end_id], device=device, dtype=torch.long)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    model.eval()
    rows = settings.num_samples
    inputs, past = torch.tensor([prompt] * rows, device=device), None
    # transformers 5.24 renamed the key/value cache argument and output `cache` (past_key_values is deprecated).
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, times = [], [0.0]
    start = time.perf_counter()
    for _ in range(budget):
        out = model(input_ids=inputs, use_cache=True, **{cache_name: past})
        past = out[cache_name]
        logits = out.logits[:, -1].float()  # (rows, vocab)
        if banned.numel():
            logits = logits.index_fill(-1, banned, float("-inf"))
        token, _ = diffusion.draw_tokens(logits, settings.sampling, settings.temperature, settings.top_k, settings.top_p, generator)
        token = token.masked_fill(done, end_id)
        tokens.append(token)
        synchronize(device)
        times.append(time.perf_counter() - start)
        done |= token == end_id
        if bool(done.all()):
            break
        inputs = token.view(rows, 1)
    drawn = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in range(rows)]
    generated = [row[: row.index(end_id) + 1] if end_id in row else row for row in drawn]
    texts = [
        tokenizer.decode(prompt[1:] + [i for i in row if i != end_id], skip_special_tokens=True).strip() for row in generated
    ]
    return ARGeneration(prompt, generated, texts, times, len(tokens))
