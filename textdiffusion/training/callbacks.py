"""Trainer callbacks: the training step for the collator, a clean stop on SIGINT/SIGTERM, step times.
"""

import logging
import signal
import statistics
import time

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class TrainingStep(TrainerCallback):
    """The training step, for a collator built with `training_step=` this callback (the mask-rate curriculum and
    the repeat-mask warm-up read it). Calling it gives the step of the last `on_step_begin`; the Trainer collates
    a batch or two ahead of the step that trains on it, and the collator runs in this process (no workers)."""

    def __init__(self):
        self.step = 0

    def __call__(self) -> int:
        return self.step

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


class StopOnSignal(TrainerCallback):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, stop. The run resumes from it."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.signal = signum
        logger.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal is not None:
            control.should_save = True
            control.should_training_stop = True


class StepTimes(TrainerCallback):
    """The wall time at the end of every optimiser step, and from it the steady-state step time: the median
    interval between step ends after the first `skip` steps (compilation, first allocations, the data loader's
    start), everything the run does between steps included (collation, logging, callbacks)."""

    def __init__(self, skip: int = 5):
        self.skip, self.stamps = skip, []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    def steady_seconds(self) -> float | None:
        """The median step time after the first `skip` steps (fewer when the run was short), None under 2 steps."""
        skip = min(self.skip, max(0, len(self.stamps) - 3))
        intervals = [b - a for a, b in zip(self.stamps[skip:], self.stamps[skip + 1:])]
        return statistics.median(intervals) if intervals else None
