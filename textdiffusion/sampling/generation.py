"""The one diffusion generation call every script uses: settings and a checkpoint in, texts and trajectory out.
"""

import time
from dataclasses import dataclass
from itertools import groupby

import torch
from tqdm.auto import tqdm

from textdiffusion.blocks.cache import BlockModel
from textdiffusion.data.tokenization import (
    end_token_id,
    is_character_level,
    start_token_id,
)
from textdiffusion.errors import SettingsError
from textdiffusion.models.checkpoint import Checkpoint
from textdiffusion.models.heads import max_positions
from textdiffusion.sampling.guidance import guide_nll, load_guide
from textdiffusion.sampling.prompts import banned_token_ids, build_inputs, decode_texts
from textdiffusion.sampling.sampler import SampleResult, TrajectoryStep, sample, stream_result
from textdiffusion.sampling.settings import GenerationSettings

MASK_SYMBOL = "_"  # how a still-masked position is shown in the step-by-step view


@dataclass
class Generation:
    """What one generate() call produced: the sampler's result (ids, fixed positions, trajectory, nfe), the texts,
    the wall-clock seconds of the sampling loop (after one untimed warm-up pass, as the autoregressive sampler's, unless
    a streamer was given),
    the settings as sampled (GenerationSettings.resolved) and the time.perf_counter() at which those seconds began."""

    result: SampleResult
    texts: list[str]
    seconds: float
    settings: GenerationSettings | None = None
    started: float | None = None

    @property
    def ids(self) -> torch.Tensor:
        return self.result.ids

    @property
    def trajectory(self) -> list[TrajectoryStep]:
        return self.result.trajectory

    @property
    def nfe(self) -> int:
        return self.result.nfe

    @property
    def generated_tokens(self) -> int:
        """Positions the sampler filled, all samples together."""
        return int((~self.result.fixed).sum())


def check_block_settings(settings: GenerationSettings, block_size: int) -> None:
    """SettingsError for settings a block-diffusion checkpoint cannot sample with."""
    if settings.block_size not in (None, block_size):
        raise SettingsError(f"block_size {settings.block_size}: this checkpoint was trained with blocks of {block_size} "
                         f"and samples with those; use block_size {block_size} or leave it out")
    if settings.cfg_scale > 0:
        raise SettingsError(f"cfg_scale {settings.cfg_scale}: classifier-free guidance is not available for a block-diffusion "
                         "checkpoint (its prompt is in the key/value cache); leave it out")


def generate(checkpoint: Checkpoint, settings: GenerationSettings, progress: bool | None = None,
             streamer=None) -> Generation:
    """Sample `settings.num_samples` texts from `checkpoint`: the generation loop every script uses.

    With `settings.guide` the causal LM guides every step and, with `settings.rerank` N > 1, N candidates are
    drawn per sample and the guide keeps the one it finds most likely per token.
    `progress`: None shows a tqdm bar on a terminal for runs longer than a second, True always, False never.
    `streamer` (transformers' TextDiffusionStreamer protocol: put_draft, put, end) gets every step as it is taken
    (sampler._Stream); with rerank N > 1 the kept candidates' steps, once the guide has chosen them. Give a streamer
    that draws on the terminal as it goes (transformers.TextDiffusionStreamer) progress=False, or the bar and its
    drafts overwrite each other.
    """
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    line_by_line = checkpoint.line_by_line
    settings = settings.resolved(max_positions(model), line_by_line, is_character_level(tokenizer))
    if checkpoint.block_size:
        check_block_settings(settings, checkpoint.block_size)
        model = BlockModel(model, checkpoint.block_size, cache=settings.kv_cache)
    guide = load_guide(settings.guide, checkpoint, settings.max_length)[0] if settings.guide else None
    rows = settings.num_samples * settings.rerank
    try:
        input_ids = build_inputs(
            tokenizer, settings.prefix, settings.max_length, rows, settings.infill, end_token=line_by_line
        )
    except ValueError as err:
        raise SettingsError(str(err)) from None
    # In an infill template the document's end is fixed by the template, so no end token inside the gaps.
    allow_end = line_by_line and settings.infill is None
    banned = banned_token_ids(tokenizer, allow_end=allow_end)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    config = settings.sampler()
    autocast = checkpoint.forward_context()  # its precision: bfloat16 autocast on a GPU unless told otherwise
    bar = tqdm(total=config.steps, desc="sampling", unit="step", delay=1.0, leave=False,
               disable=None if progress is None else not progress)
    if streamer is None:  # a streamer may refuse the batch at its first put, before any forward pass (transformers')
        with checkpoint.forward_context():
            warm_up(checkpoint.model)  # as sample_autoregressive does: the first pass's lazy set-up is not billed
    start = time.perf_counter()
    with autocast:
        result = sample(model, input_ids, tokenizer.mask_token_id, config, banned, generator, progress=bar.update,
                        guide=guide, end_token_id=end_token_id(tokenizer) if allow_end else None,
                        streamer=streamer if settings.rerank == 1 else None)
        if settings.rerank > 1:
            end = end_token_id(tokenizer)
            # Score each candidate's text: the generated positions up to and including its first end token.
            scored = ~result.fixed & (result.ids == end).cumsum(-1).sub((result.ids == end).long()).eq(0) if line_by_line else ~result.fixed
            nll = guide_nll(guide, result.ids, scored).view(settings.num_samples, settings.rerank)
            best = nll.argmin(-1) + torch.arange(settings.num_samples) * settings.rerank
            result = result.rows(best)
            result.guide_nfe += 1
            if streamer is not None:
                stream_result(streamer, result)
    synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return Generation(result, decode_texts(tokenizer, result.ids, stop_at_end=line_by_line), seconds, settings, start)


def warm_up(model) -> None:
    """One untimed forward pass, so lazy initialisation is not billed to the first timed step."""
    device = next(model.parameters()).device
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 4), dtype=torch.long, device=device))
    synchronize(device)


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
