"""The variable-rate masking collator: each example is masked at its own noise level.

Per example (or per block, with block diffusion): draw a time t and mask through the one forward process
(`masking.forward`): exactly round-up(m(t) * n) of the n maskable positions become `<mask>`, and labels are -100
wherever the input is visible. The collator decides the times: antithetic draws in a window, a curriculum that
widens it with the training step, unbiased draws for evaluation (or fixed `eval_times` for probes), and the copy
rows of repeat masking.
Everything is batched tensor code; no Python loop over rows.
"""

from collections.abc import Callable
from dataclasses import replace

import torch

from textdiffusion.data.tokenization import end_token_id
from textdiffusion.errors import SettingsError
from textdiffusion.masking.forward import ForwardProcess, antithetic_times, cycled_times, filler_positions

MASK_RATES = ("discrete", "continuous")  # one of ten levels per batch, or a time per example
DISCRETE_LEVELS = torch.linspace(0.1, 1.0, 10)
TIME_SAMPLING = ("uniform", "bell")
REPEAT_DIRECTIONS = ("forward", "both")  # copy rows hide the later mentions; or, half of them, the first ones
CURRICULUM_START = 0.2  # with a curriculum, the largest time drawn grows from this share of the window to all of it
REPEAT_ROW_EXTRA = 0.15  # repeat-masked rows: the share of other tokens masked at random as well
# Repeat masking skips common tokens: those in at least this share of the training rows ("the", ".", "was"). Their
# repeats are not what copying is about, and masking them would hide the context that says which word a slot needs.
COMMON_ROW_SHARE = 0.2


def _step_zero() -> int:
    return 0


class DiffusionCollator:
    """Masks a batch of rows at drawn (or fixed) times.

    `training_step` is called at each batch for the training step the curriculum and the repeat-mask warm-up read
    (the training package passes its `TrainingStep` callback); without one the step is 0. `evaluation`: every batch
    takes MDLM's antithetic draw over all of (0, 1] (`forward.antithetic_times`, no window, curriculum or copy rows),
    so the logged bound is an unbiased estimate of the bound; with a `seed` the random stream is the collator's own
    and `reset()` restarts it, so every evaluation draws the same times and masks and eval_loss stays comparable.
    With `eval_times` (a probe at chosen levels, not a bound) every batch is masked at those times in turn.
    """

    def __init__(
        self,
        tokenizer,
        mask_rates: str = "continuous",
        schedule: str = "linear",
        prefix_length: int = 0,
        prefix_policy: str = "fixed",
        line_by_line: bool = False,
        min_mask_time: float = 1e-3,
        max_mask_time: float = 1.0,
        time_sampling: str = "uniform",
        curriculum_steps: int = 0,
        evaluation: bool = False,
        eval_times: torch.Tensor | None = None,
        seed: int | None = None,
        repeat_mask_share: float = 0.0,
        common_token_ids=(),
        repeat_mask_steps: int = 0,
        repeat_mask_direction: str = "forward",
        block_size: int | None = None,
        training_step: Callable[[], int] = _step_zero,
    ):
        if mask_rates not in MASK_RATES:
            raise SettingsError(f"mask_rates must be one of {', '.join(MASK_RATES)}, not {mask_rates!r}")
        if repeat_mask_direction not in REPEAT_DIRECTIONS:
            raise SettingsError(f"repeat_mask_direction must be one of {', '.join(REPEAT_DIRECTIONS)}, not {repeat_mask_direction!r}")
        if time_sampling not in TIME_SAMPLING:
            raise SettingsError(f"time_sampling must be one of {', '.join(TIME_SAMPLING)}, not {time_sampling!r}")
        self.forward = ForwardProcess.for_tokenizer(
            tokenizer, line_by_line, schedule=schedule, prefix_length=prefix_length, prefix_policy=prefix_policy,
            block_size=block_size,
        )
        self.end_id = end_token_id(tokenizer)
        self.line_by_line = line_by_line
        self.repeat_mask_share, self.repeat_mask_steps = repeat_mask_share, repeat_mask_steps
        self.repeat_mask_direction = repeat_mask_direction
        self.common_ids = torch.tensor(sorted(common_token_ids), dtype=torch.long)
        self.mask_rates = mask_rates
        self.min_mask_time, self.max_mask_time = min_mask_time, max_mask_time
        self.time_sampling, self.curriculum_steps = time_sampling, curriculum_steps
        self.training_step = training_step
        self.eval_times = eval_times
        self.evaluation = evaluation or eval_times is not None
        self.seed = seed
        self.reset()

    @staticmethod
    def common_tokens(rows, share: float = COMMON_ROW_SHARE) -> set[int]:
        """The token ids found in at least `share` of `rows` (lists of ids): the ones repeat masking leaves alone."""
        counts: dict[int, int] = {}
        for row in rows:
            for token in set(row):
                counts[token] = counts.get(token, 0) + 1
        return {token for token, count in counts.items() if count >= share * len(rows)}

    def reset(self) -> None:
        """Restart the random stream (with a seed, the same batches are masked the same way again)."""
        self.generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def sample_times(self, batch: int) -> torch.Tensor:
        """(batch,) times t in (0, 1]: continuous ones in [min_mask_time, max_mask_time]."""
        if self.eval_times is not None:
            return cycled_times(self.eval_times, batch)
        if self.evaluation:
            return antithetic_times(batch, self.generator)
        if self.mask_rates == "discrete":
            level = DISCRETE_LEVELS[torch.randint(len(DISCRETE_LEVELS), (1,), generator=self.generator)]
            return level.expand(batch).clone()
        # Antithetic (low-discrepancy) draw: one uniform offset, then evenly spaced quantiles (MDLM, sec. 3.5).
        u = (self._rand(1) + torch.arange(batch) / batch) % 1.0
        if self.time_sampling == "bell":
            # Quantiles of Beta(2, 2) (density 6x(1-x)): more middle times, fewer near 0 and 1. Its CDF 3x^2 - 2x^3
            # is a cubic whose inverse has this closed form.
            u = 0.5 - torch.sin(torch.asin(1.0 - 2.0 * u) / 3.0)
        low, high = self.min_mask_time, self.max_mask_time
        if self.curriculum_steps:
            high = low + (high - low) * min(1.0, max(CURRICULUM_START, self.training_step() / self.curriculum_steps))
        return low + (high - low) * (1.0 - u)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [torch.as_tensor(example["input_ids"]) for example in examples]
        input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.forward.pad_id)  # (batch, seq)
        maskable = self.forward.maskable(input_ids, self.generator)
        times = self.sample_times(self.forward.num_units(input_ids))
        units = self.forward.mask_units(input_ids, maskable, times, self.generator)
        attention_mask = input_ids != self.forward.pad_id
        # Every row during the first repeat_mask_steps steps, then a share of them.
        repeat_share = 1.0 if self.training_step() < self.repeat_mask_steps else self.repeat_mask_share
        if repeat_share > 0 and not self.evaluation:
            masked, filler = self._copy_rows(input_ids, maskable, units.masked, repeat_share)
            units = replace(units, masked=masked)
            if filler is not None:
                attention_mask &= ~filler
        input_ids, attention_mask = units.model_inputs(attention_mask)
        rate = units.rate
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask.long(),
            "labels": units.labels,
            "mask_time": times,
            "mask_rate": rate,
            # m'(t) / (share masked): MDLM's m'(t)/m(t) with the share really masked, finite at tiny t.
            "loss_weight": units.weight.float(),
            "num_maskable": units.num_maskable,
            # What a bound per document token divides by: the maskable tokens less line-by-line filler.
            "num_counted": self._counted(units.clean, maskable, units.num_maskable),
        }

    def _counted(self, input_ids, maskable, num_maskable) -> torch.Tensor:
        """(units,) each unit's maskable tokens that are document text (its own end token counted, filler not)."""
        if not self.line_by_line:
            return num_maskable
        filler = filler_positions(input_ids, self.end_id) & maskable
        return num_maskable - filler.view(num_maskable.numel(), -1).sum(-1)

    def _copy_rows(self, input_ids, maskable, drawn, share: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """In a share of the rows, mask every uncommon token that repeats one earlier in the row (a name, an object;
        not "the", and not the end tokens that fill a line-by-line row) instead of the drawn mask: the earlier
        occurrence is visible unless masked by chance, so copying a word from the context becomes a frequent
        training target instead of a rare one. Returns the mask and, for line-by-line rows, the filler positions
        that copy rows hide from attention (None otherwise)."""
        batch, length = input_ids.shape
        earlier = torch.ones(length, length, dtype=torch.bool).tril(-1)  # [j, i]: i before j
        same = input_ids.unsqueeze(2) == input_ids.unsqueeze(1)
        repeats = (same & earlier).any(-1)
        if self.repeat_mask_direction == "both":
            # Half the copy rows hide the first mentions instead and keep the last one: a sampler may write
            # the ending before the opening, and then the opening has to copy from the ending.
            before_later = (same & earlier.T).any(-1)  # the token occurs again later in the row
            backward = (self._rand(batch) < 0.5).unsqueeze(1)
            repeats = torch.where(backward, before_later, repeats)
        repeats &= maskable & (input_ids != self.end_id) & ~torch.isin(input_ids, self.common_ids)
        chosen = (self._rand(batch) < share).unsqueeze(1)
        # A chosen row keeps most of its context: its repeats, plus a light random mask, instead of the draw.
        # The end tokens that fill a line-by-line row after the document are hidden from attention there: with
        # them in view a tiny model does not learn to copy at all (measured, RESULTS.md), and they are not
        # what a copy row teaches.
        filler = chosen & filler_positions(input_ids, self.end_id) if self.line_by_line else None
        light = (self._rand(batch, length) < REPEAT_ROW_EXTRA) & maskable
        masked = torch.where(chosen, repeats | light, drawn)
        if filler is not None:
            masked &= ~filler
        return masked, filler
