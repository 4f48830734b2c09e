"""The one iterative-unmasking sampler: walks t from 1 to 0 and returns its trajectory. Each step the denoiser
proposes a token for every masked position of the current block, and a strategy (strategies.py) decides from one
view of the step which to reveal and which decoded ones to hide again.
"""

from dataclasses import dataclass, field

import torch

from textdiffusion.masking.schedules import mask_fraction
from textdiffusion.models.heads import Denoiser, as_denoiser
from textdiffusion.sampling.drawing import certainty, draw_tokens
from textdiffusion.sampling.guidance import guided_by, step_logits
from textdiffusion.sampling.strategies import StepView, strategy_for


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
        pick = lambda x: None if x is None else x[index]
        steps = [TrajectoryStep(s.ids[index], s.revealed[index], s.remasked[index], s.confidence[index],
                                pick(s.candidates), pick(s.candidate_probs), pick(s.active)) for s in self.trajectory]
        return SampleResult(self.ids[index], self.fixed[index], steps, self.nfe, self.guide_nfe)


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
    streamer=None,
) -> SampleResult:
    """Iteratively unmask every `mask_token_id` position of `input_ids` (batch, seq).

    `model`: a models.heads.Denoiser (a blocks.BlockModel: blocks are then its own, aligned as in training, each
    computed over the cached prefix, and with `end_token_id` sampling stops after the first block by which every
    row has written an end token), or a masked LM. Positions not masked at the start are fixed (prefix, infill
    context, suffix). `banned_token_ids` are never drawn (the mask, padding and start tokens; the end token too
    unless the model was trained to end documents with it). `progress`, if given, is called once per step, and
    `streamer` (transformers' TextDiffusionStreamer protocol, see _Stream) is handed each step as it is taken. `guide` (with config.guide_weight > 0), a causal LM, joins the draws as a product of experts (guided_by).
    `end_token_id` with config.end_after_text: certainty-ordered strategies reveal an end token only as part of a
    run that starts right after revealed text (strategies.EndAfterText).
    """
    denoiser = as_denoiser(model, config.sparse_logits)
    denoiser.reset()
    strategy = strategy_for(config, end_token_id)
    ids = input_ids.clone().to(denoiser.device)
    generated = ids == mask_token_id  # (batch, seq): the span the sampler writes
    propose = Proposals(denoiser, config, ids, mask_token_id, banned_token_ids, generator, attention_mask, guide)
    nothing = torch.zeros_like(generated)
    trajectory = [_record(ids, nothing, nothing, torch.zeros(ids.shape))]  # step 0: the start
    stream = _Stream(streamer, trajectory[0].ids, generated.cpu(), progress)
    blocks = _blocks(generated.cpu(), denoiser.block_size or config.block_size, aligned=denoiser.block_size is not None)
    for columns, steps in zip(blocks, _shared(config.steps, len(blocks))):
        stream.block(trajectory[-1].ids, columns)
        columns = columns.to(ids.device).expand_as(generated)
        block, confidence = generated & columns, torch.zeros(ids.shape, device=ids.device)
        for step in range(1, steps + 1):
            if strategy.until_done and not (block & (ids == mask_token_id)).any():
                break
            view, candidates = propose(ids, block, confidence, step, steps)
            decision = strategy.decide(view)
            # The step cap: whatever is left of the block is filled at its last step, never dropped.
            reveal = view.todo if step == steps else decision.reveal
            hide = nothing if step == steps or decision.hide is None else decision.hide
            new_ids = torch.where(reveal, view.proposal, ids).masked_fill(hide, mask_token_id)
            now_masked = new_ids == mask_token_id
            confidence = torch.where(reveal, view.proposal_conf, confidence).masked_fill(now_masked, 0.0)
            trajectory.append(_record(new_ids, view.masked & ~now_masked, ~view.masked & now_masked, confidence,
                                      *candidates, columns if len(blocks) > 1 else None))
            stream.step(trajectory)
            ids = new_ids
        if denoiser.block_size and end_token_id is not None and (ids == end_token_id).any(-1).all():
            ids = _end_everywhere_after(ids, mask_token_id, end_token_id, confidence, trajectory)
            stream.step(trajectory, progress=False)  # the fill step, if it took one
            break
    stream.end(trajectory[-1].ids)
    return SampleResult(ids.cpu(), (~generated).cpu(), trajectory, propose.nfe, propose.guide_nfe)


def stream_result(streamer, result: SampleResult) -> None:
    """Hand a finished `result` to `streamer` step by step, with the very calls sample() makes while it samples:
    for a caller that knows only at the end which rows it keeps (generate's rerank)."""
    steps = result.trajectory
    stream = _Stream(streamer, steps[0].ids, ~result.fixed)
    for step in steps[1:]:
        if step.active is not None:  # recorded with more than one block: the block this step worked on
            stream.block(step.ids, step.active.any(0))
        stream.draft(step.ids)
    stream.end(steps[-1].ids)


class _Stream:
    """The sampling as transformers' diffusion generate() hands it to a streamer (TextDiffusionStreamer protocol):
    `put(prompt)` first, so that `skip_prompt` skips it; `put_draft(value=...)` after every step, the current state of
    every position not yet final, masks included (only to a streamer with put_draft, as there); `put(tokens)` once
    a block's tokens are final (without blocks: at the end); `end()`. Every value is a (batch, n) CPU tensor of
    the whole batch, as recorded in the trajectory: transformers' text streamers show one sequence and raise
    ValueError at the first put for batch > 1, before any forward pass.
    A streamer with `_takes_start_draft = True` also gets the start (every generated position masked) as a first
    draft, like trajectory step 0. With `streamer` None it only calls `progress` (if given) once per step."""

    def __init__(self, streamer, start: torch.Tensor, generated: torch.Tensor, progress=None):
        self.streamer, self.drafts, self.progress, self.sent = streamer, hasattr(streamer, "put_draft"), progress, 1
        if streamer is None:
            return
        todo = generated.any(0)
        # The prompt: the fixed tokens before the first generated position (start token, prefix, a template's
        # opening words); a fixed token after it (infill context, a closing end token) belongs to the draft.
        self.final = int(todo.nonzero().min()) if todo.any() else start.size(-1)
        streamer.put(start[:, : self.final])
        if getattr(streamer, "_takes_start_draft", False):
            self.draft(start)

    def step(self, trajectory: list, progress: bool = True) -> None:
        """The trajectory's steps not yet handed on, each as a draft; `progress` once per call."""
        for step in trajectory[self.sent:]:
            self.draft(step.ids)
        self.sent = len(trajectory)
        if progress and self.progress is not None:
            self.progress()

    def draft(self, ids: torch.Tensor) -> None:
        if self.streamer is not None and self.drafts:
            self.streamer.put_draft(value=ids[:, self.final :])

    def block(self, ids: torch.Tensor, columns: torch.Tensor) -> None:
        """A block (its (seq,) columns) starts: everything before it is final."""
        self._confirm(ids, int(columns.nonzero().min()))

    def end(self, ids: torch.Tensor) -> None:
        if self.streamer is not None:
            self._confirm(ids, ids.size(-1))
            self.streamer.end()

    def _confirm(self, ids: torch.Tensor, upto: int) -> None:
        if self.streamer is not None and upto > self.final:
            self.streamer.put(ids[:, self.final : upto])
            self.final = upto


class Proposals:
    """The denoising pass of a step: a token drawn for every masked position of the block, with its certainty,
    as the StepView the strategy decides from; counts the forward passes of the model and of the guide."""

    def __init__(self, denoiser: Denoiser, config: SamplerConfig, ids, mask_token_id, banned_token_ids, generator,
                 attention_mask, guide):
        self.denoiser, self.config, self.mask_token_id, self.generator, self.guide = denoiser, config, mask_token_id, generator, guide
        device = ids.device
        self.banned = torch.tensor(sorted(set(banned_token_ids) | {mask_token_id}), device=device)
        self.attention_mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        fixed = ids != mask_token_id
        self.prompt = fixed & ~torch.isin(ids, self.banned)  # the text the caller fixed (start, padding ... excluded)
        self.nfe = self.guide_nfe = 0

    def noise(self, shape, device) -> torch.Tensor:
        # Drawn on the generator's device (a CPU generator cannot fill a CUDA tensor, nor the reverse), then moved.
        where = self.generator.device if self.generator is not None else device
        return torch.rand(shape, generator=self.generator, device=where).to(device)

    def __call__(self, ids, block, confidence, step: int, steps: int) -> tuple[StepView, tuple]:
        """(the view of this step, (candidates, candidate_probs) to record) for the state `ids` (batch, seq)."""
        config, masked = self.config, ids == self.mask_token_id
        todo = masked & block
        rows, passes = step_logits(self.denoiser, ids, self.attention_mask, todo, self.prompt, self.mask_token_id,
                                   config.cfg_scale)
        self.nfe += passes
        proposal, proposal_conf, score = ids.clone(), torch.zeros(ids.shape, device=ids.device), torch.zeros(ids.shape, device=ids.device)
        if todo.any():
            rows = rows.float().index_fill(-1, self.banned, float("-inf"))
            if self.guide is not None and config.guide_weight > 0:
                rows = guided_by(self.guide, ids, self.attention_mask, todo, rows, self.banned, config.guide_weight)
                self.guide_nfe += 1
            drawn, drawn_conf = draw_tokens(rows, config.sampling, config.temperature, config.top_k, config.top_p, self.generator)
            proposal[todo], proposal_conf[todo] = drawn, drawn_conf
            score[todo] = certainty(rows, config.confidence, drawn_conf)
        t_now, t_next = (torch.tensor(1.0 - k / steps, dtype=torch.float64) for k in (step - 1, step))
        span = block.sum(-1)
        keep_masked = torch.round(mask_fraction(config.schedule, t_next) * span.double()).long()  # (batch,)
        view = StepView(ids, masked, block, todo, todo, todo, proposal, proposal_conf, score, rows, confidence,
                        keep_masked, span, t_now, t_next, step, steps, lambda: self.noise(ids.shape, ids.device))
        return view, _candidates(rows, todo, config.candidates)


def _candidates(rows: torch.Tensor, todo: torch.Tensor, k: int) -> tuple:
    """((batch, seq, k) the most likely tokens at each todo position, -1 elsewhere; their probabilities, 0
    elsewhere), or (None, None) without k."""
    if not k:
        return None, None
    top_ids = torch.full((*todo.shape, k), -1, dtype=torch.long, device=todo.device)
    top_probs = torch.zeros((*todo.shape, k), device=todo.device)
    if todo.any():
        best = rows.topk(min(k, rows.size(-1)), dim=-1)  # softmax only over the k kept: same order
        probs = (best.values - rows.logsumexp(-1, keepdim=True)).exp()
        top_probs[todo] = torch.nn.functional.pad(probs, (0, k - probs.size(-1)))
        top_ids[todo] = torch.nn.functional.pad(best.indices, (0, k - best.indices.size(-1)), value=-1)
    return top_ids, top_probs


def _shared(steps: int, blocks: int) -> list[int]:
    """`steps` shared over `blocks` as evenly as possible, earlier blocks first; at least one each."""
    return [max(steps // blocks + (i < steps % blocks), 1) for i in range(blocks)]


def _end_everywhere_after(ids, mask_token_id: int, end_token_id: int, confidence, trajectory: list) -> torch.Tensor:
    """Every row has ended: what follows an end token is end tokens (training's layout), so write them as one
    more step of the trajectory."""
    rest = ids == mask_token_id
    if rest.any():
        ids = ids.masked_fill(rest, end_token_id)
        trajectory.append(_record(ids, rest, torch.zeros_like(rest), confidence.masked_fill(rest, 1.0)))
    return ids


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


def _record(ids, revealed, remasked, confidence, candidates=None, candidate_probs=None, active=None) -> TrajectoryStep:
    cpu = lambda x: None if x is None else x.cpu()
    return TrajectoryStep(ids.cpu(), revealed.cpu(), remasked.cpu(), confidence.float().cpu(),
                          cpu(candidates), None if candidate_probs is None else candidate_probs.float().cpu(), cpu(active))
