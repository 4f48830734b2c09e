"""The forward process of masked diffusion: which positions of a batch are hidden behind `<mask>` at given times.

Training (`masking.collator`) and the likelihood bound (`metrics.likelihood`) both mask through
`ForwardProcess.mask_units`, so they cannot drift apart: for the same rows, times and generator state they hide
the same positions.

A unit is what one time t applies to: a row, or with block diffusion one block of a row (a row of L tokens is
L / B units of B). Each unit masks exactly round-up(m(t) * n) of its n maskable tokens, at least one, with `<mask>`
(no 80/10/10 replacement: generation only ever sees `<mask>`). Maskable means: not the start token, not padding,
not inside the visible prefix, and not the end token unless the data is line-by-line (there the trailing end tokens
are what the model learns to predict so that generation can end a document).
"""

from dataclasses import dataclass

import torch

from textdiffusion.data.tokenization import end_token_id, start_token_id
from textdiffusion.errors import SettingsError
from textdiffusion.masking.schedules import SCHEDULES, bound_weight, mask_fraction

PREFIX_POLICIES = ("fixed", "random")  # the same visible prefix in every row, or 0..prefix_length tokens per row


@dataclass(frozen=True)
class MaskedUnits:
    """A batch after the forward process: the clean rows, which positions are masked, and each unit's time."""

    clean: torch.Tensor  # (batch, seq) token ids
    masked: torch.Tensor  # (batch, seq) bool
    time: torch.Tensor  # (units,)
    num_maskable: torch.Tensor  # (units,) tokens of each unit that could have been masked
    schedule: str
    mask_id: int
    block_size: int | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """(batch, seq) what the model reads: `<mask>` where masked."""
        return self.clean.masked_fill(self.masked, self.mask_id)

    @property
    def labels(self) -> torch.Tensor:
        """(batch, seq) the clean token where masked, -100 (ignored) wherever the input is visible."""
        return self.clean.masked_fill(~self.masked, -100)

    @property
    def rate(self) -> torch.Tensor:
        """(units,) the share of each unit's maskable tokens really masked."""
        num_masked = self.masked.view(self.time.numel(), -1).sum(-1)
        return num_masked / self.num_maskable.clamp_min(1)

    @property
    def weight(self) -> torch.Tensor:
        """(units,) float64 m'(t) / (share masked): each unit's weight in the bound (`schedules.bound_weight`)."""
        return bound_weight(self.schedule, self.time, self.rate)

    def model_inputs(self, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) in the layout the model is trained on: block diffusion reads the noisy rows
        followed by the clean ones (blocks.doubled_forward)."""
        noisy = self.input_ids
        if self.block_size:
            return torch.cat([noisy, self.clean], 1), attention_mask.repeat(1, 2)
        return noisy, attention_mask


@dataclass(frozen=True)
class ForwardProcess:
    """How rows are masked: the schedule m(t), which tokens may be masked, and the units times apply to.

    `never_masked` holds the token ids that are never masked (start, padding, and the end token of packed text);
    `for_tokenizer` fills it and the mask and padding ids from a tokenizer.
    """

    mask_id: int
    pad_id: int
    never_masked: torch.Tensor
    schedule: str = "linear"
    prefix_length: int = 0
    prefix_policy: str = "fixed"
    block_size: int | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise SettingsError(f"schedule {self.schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
        if self.prefix_policy not in PREFIX_POLICIES:
            raise SettingsError(f"prefix_policy must be one of {', '.join(PREFIX_POLICIES)}, not {self.prefix_policy!r}")
        if self.prefix_length < 0:
            raise SettingsError(f"prefix_length {self.prefix_length} must be 0 or more")
        if self.block_size is not None and self.block_size < 1:
            raise SettingsError(f"block_size {self.block_size} must be at least 1")

    @classmethod
    def for_tokenizer(cls, tokenizer, line_by_line: bool = False, **settings) -> "ForwardProcess":
        never = {start_token_id(tokenizer), tokenizer.pad_token_id}
        if not line_by_line:
            never.add(end_token_id(tokenizer))
        never_masked = torch.tensor(sorted(i for i in never if i is not None))
        return cls(tokenizer.mask_token_id, tokenizer.pad_token_id, never_masked, **settings)

    def prefix_lengths(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """(batch,) visible tokens after the start token: drawn in 0..prefix_length with the random policy."""
        if self.prefix_policy == "random" and self.prefix_length > 0:
            return torch.randint(self.prefix_length + 1, (batch,), generator=generator)
        return torch.full((batch,), self.prefix_length)

    def maskable(self, input_ids: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(batch, seq) bool: the positions a time may mask. The random prefix policy draws from `generator`."""
        positions = torch.arange(input_ids.size(1))
        # The prefix counts tokens after the start token, which is never masked anyway.
        prefix = positions.unsqueeze(0) <= self.prefix_lengths(input_ids.size(0), generator).unsqueeze(1)
        return ~torch.isin(input_ids, self.never_masked) & ~prefix

    def num_units(self, input_ids: torch.Tensor) -> int:
        """How many times a batch takes: one per row, or one per block of a row."""
        batch, length = input_ids.shape
        unit = self.block_size or length
        if length % unit:
            raise SettingsError(f"rows of {length} tokens do not split into blocks of {unit}")
        return batch * (length // unit)

    def mask_units(
        self, input_ids: torch.Tensor, maskable: torch.Tensor, times: torch.Tensor, generator: torch.Generator | None
    ) -> MaskedUnits:
        """Mask each unit at its time: exactly round-up(m(t) * n) of its n maskable tokens (at least one), the ones
        with the smallest of one uniform score per position drawn from `generator`.

        input_ids and maskable (batch, seq); times (units,), see `num_units`.
        """
        units = self.num_units(input_ids)
        if times.numel() != units:
            raise SettingsError(f"{times.numel()} times for {units} masking units")
        unit_maskable = maskable.view(units, -1)
        num_maskable = unit_maskable.sum(-1)  # (units,)
        rate = mask_fraction(self.schedule, times)
        num_masked = torch.minimum(torch.ceil(rate * num_maskable).long().clamp_min(1), num_maskable)
        scores = torch.rand(unit_maskable.shape, generator=generator).masked_fill(~unit_maskable, 2.0)
        rank = scores.argsort(-1).argsort(-1)
        masked = (rank < num_masked.unsqueeze(1)).view(input_ids.shape)
        return MaskedUnits(input_ids, masked, times, num_maskable, self.schedule, self.mask_id, self.block_size)


def cycled_times(times: torch.Tensor, units: int) -> torch.Tensor:
    """(units,) fixed times given in turn: unit u gets times[u % len(times)]."""
    return times[torch.arange(units) % len(times)]


def antithetic_times(units: int, generator: torch.Generator | None) -> torch.Tensor:
    """(units,) times in (0, 1]: one uniform offset, then evenly spaced (MDLM's low-discrepancy draw, sec. 3.5).

    Each time alone is uniform on (0, 1], so a t-average over them is an unbiased estimate of the bound's integral;
    together they cover the interval evenly, so it has low variance.
    """
    u = (torch.rand(1, generator=generator) + torch.arange(units) / units) % 1.0
    return 1.0 - u


def filler_positions(input_ids: torch.Tensor, end_id: int) -> torch.Tensor:
    """(batch, seq) bool: the end tokens that fill a line-by-line row after its document's own end token. They
    are not document text: a perplexity per document token counts the document's one end token and not these."""
    ends = input_ids == end_id
    return ends & (ends.long().cumsum(-1) >= 2)
