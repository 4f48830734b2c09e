"""The variable-rate masking collator: each example is masked at its own noise level.

Per example: draw a time t, mask m(t) of the maskable positions (exactly round-up(m(t) * n), at least one), put
`<mask>` there (no 80/10/10 replacement: generation only ever sees `<mask>`), and set labels to -100 wherever the
input is visible. Maskable means: not the start token, not padding, not inside the visible prefix, and not the
end token unless the data is line-by-line (there the trailing end tokens are what the model learns to predict
so that generation can end a document). Everything is batched tensor code; no Python loop over rows.
"""

import torch

from textdiffusion.data.tokenization import end_token_id, start_token_id
from textdiffusion.masking.schedules import bound_weight, mask_fraction

DISCRETE_LEVELS = torch.linspace(0.1, 1.0, 10)
TIME_SAMPLING = ("uniform", "bell")
REPEAT_DIRECTIONS = ("forward", "both")  # copy rows hide the later mentions; or, half of them, the first ones
CURRICULUM_START = 0.2  # with a curriculum, the largest time drawn grows from this share of the window to all of it
# Evaluation uses fixed times (midpoints of ten equal bins) so eval_loss is comparable between evaluations
# and the 1/t-weighted average is a midpoint-rule estimate of the ELBO integral.
EVAL_TIMES = (torch.arange(10, dtype=torch.float32) + 0.5) / 10
REPEAT_ROW_EXTRA = 0.15  # repeat-masked rows: the share of other tokens masked at random as well
# Repeat masking skips common tokens: those in at least this share of the training rows ("the", ".", "was"). Their
# repeats are not what copying is about, and masking them would hide the context that says which word a slot needs.
COMMON_ROW_SHARE = 0.2


class DiffusionCollator:
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
        eval_times: torch.Tensor | None = None,
        seed: int | None = None,
        repeat_mask_share: float = 0.0,
        common_token_ids=(),
        repeat_mask_steps: int = 0,
        repeat_mask_direction: str = "forward",
        block_size: int | None = None,
    ):
        if mask_rates not in ("discrete", "continuous"):
            raise ValueError(f"mask_rates must be 'discrete' or 'continuous', not {mask_rates!r}")
        if repeat_mask_direction not in REPEAT_DIRECTIONS:
            raise ValueError(f"repeat_mask_direction must be one of {', '.join(REPEAT_DIRECTIONS)}, not {repeat_mask_direction!r}")
        if time_sampling not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {', '.join(TIME_SAMPLING)}, not {time_sampling!r}")
        self.mask_id = tokenizer.mask_token_id
        self.pad_id = tokenizer.pad_token_id
        never = {start_token_id(tokenizer), self.pad_id}
        if not line_by_line:
            never.add(end_token_id(tokenizer))
        self.never_masked = torch.tensor(sorted(i for i in never if i is not None))
        self.end_id = end_token_id(tokenizer)
        self.line_by_line = line_by_line
        self.repeat_mask_share, self.repeat_mask_steps = repeat_mask_share, repeat_mask_steps
        self.repeat_mask_direction = repeat_mask_direction
        self.common_ids = torch.tensor(sorted(common_token_ids), dtype=torch.long)
        self.mask_rates, self.schedule = mask_rates, schedule
        self.prefix_length, self.prefix_policy = prefix_length, prefix_policy
        self.min_mask_time, self.max_mask_time = min_mask_time, max_mask_time
        self.time_sampling, self.curriculum_steps = time_sampling, curriculum_steps
        self.step = 0  # the training step, set by train.py's callback; the curriculum and repeat masking read it
        self.eval_times = eval_times
        self.seed = seed
        self.block_size = block_size
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
            return self.eval_times[torch.arange(batch) % len(self.eval_times)]
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
            high = low + (high - low) * min(1.0, max(CURRICULUM_START, self.step / self.curriculum_steps))
        return low + (high - low) * (1.0 - u)

    def prefix_lengths(self, batch: int) -> torch.Tensor:
        if self.prefix_policy == "random" and self.prefix_length > 0:
            return torch.randint(self.prefix_length + 1, (batch,), generator=self.generator)
        return torch.full((batch,), self.prefix_length)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [torch.as_tensor(example["input_ids"]) for example in examples]
        input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.pad_id)  # (batch, seq)
        batch, length = input_ids.shape
        positions = torch.arange(length)

        # The prefix counts tokens after the start token, which is never masked anyway.
        prefix = positions.unsqueeze(0) <= self.prefix_lengths(batch).unsqueeze(1)
        maskable = ~torch.isin(input_ids, self.never_masked) & ~prefix

        # Each unit draws its own time and masks exactly round-up(m(t) * n) of its n maskable tokens: a unit is a
        # row, or with block diffusion one block of a row (a row of L tokens is L / B units of B).
        unit = self.block_size or length
        if length % unit:
            raise ValueError(f"rows of {length} tokens do not split into blocks of {unit}")
        units = batch * (length // unit)
        unit_maskable = maskable.view(units, unit)
        num_maskable = unit_maskable.sum(-1)  # (units,)
        t = self.sample_times(units)
        rate = mask_fraction(self.schedule, t)
        num_masked = torch.minimum(torch.ceil(rate * num_maskable).long().clamp_min(1), num_maskable)
        # Exactly num_masked positions per unit: the ones with the smallest random scores among the maskable.
        scores = self._rand(units, unit).masked_fill(~unit_maskable, 2.0)
        rank = scores.argsort(-1).argsort(-1)
        masked = (rank < num_masked.unsqueeze(1)).view(batch, length)
        filler = None
        # Every row during the first repeat_mask_steps steps, then a share of them.
        repeat_share = 1.0 if self.step < self.repeat_mask_steps else self.repeat_mask_share
        if repeat_share > 0 and self.eval_times is None:
            # In a share of the rows, mask every uncommon token that repeats one earlier in the row (a name, an
            # object; not "the", and not the end tokens that fill a line-by-line row): the earlier occurrence is
            # visible unless masked by chance, so copying a word from the context becomes a frequent training
            # target instead of a rare one.
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
            chosen = (self._rand(batch) < repeat_share).unsqueeze(1)
            # A chosen row keeps most of its context: its repeats, plus a light random mask, instead of the draw.
            # The end tokens that fill a line-by-line row after the document are hidden from attention there: with
            # them in view a tiny model does not learn to copy at all (measured, RESULTS.md), and they are not
            # what a copy row teaches.
            filler = chosen & ((input_ids == self.end_id).long().cumsum(-1) >= 2) if self.line_by_line else None
            light = (self._rand(batch, length) < REPEAT_ROW_EXTRA) & maskable
            masked = torch.where(chosen, repeats | light, masked)
            if filler is not None:
                masked &= ~filler
            num_masked = masked.view(units, unit).sum(-1)

        rate_masked = num_masked / num_maskable.clamp_min(1)
        attention_mask = input_ids != self.pad_id
        if filler is not None:
            attention_mask &= ~filler
        noisy = input_ids.masked_fill(masked, self.mask_id)
        if self.block_size:
            # Block diffusion reads the noisy rows followed by the clean ones (blocks.doubled_forward).
            noisy, attention_mask = torch.cat([noisy, input_ids], 1), attention_mask.repeat(1, 2)
        return {
            "input_ids": noisy,
            "attention_mask": attention_mask.long(),
            "labels": input_ids.masked_fill(~masked, -100),
            "mask_time": t,
            "mask_rate": rate_masked,
            # m'(t) / (share masked): MDLM's m'(t)/m(t) with the share really masked, finite at tiny t.
            "loss_weight": bound_weight(self.schedule, t, rate_masked).float(),
            "num_maskable": num_maskable,
        }
