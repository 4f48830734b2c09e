"""Masked diffusion vs an autoregressive GPT-2 on one prompt: a side-by-side GIF and a table of numbers.

    python compare_models.py --roberta-checkpoint results/final-model --gpt2-checkpoint results-ar/final-model \
        --prompt "tom found a red ball" --clock time

Both panels run on one clock: the measured wall time of each step (--clock time) or forward passes
(--clock nfe). The diffusion panel is the trajectory of the shared sampler (sampling.generate); the GPT-2 panel
is the shared autoregressive sampler (sampling.sample_autoregressive): token by token with its KV cache and the
same token-drawing rule (diffusion.draw_tokens).
Writes the GIF (--output, default results/comparison/comparison.gif) and results.json beside it.
"""

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageDraw

from config import CompareArguments, SamplingArguments
from textdiffusion import cli, models, rendering, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import tokenization
from textdiffusion.metrics import evaluation, tables
from textdiffusion.sampling.prompts import (
    clean_prefix,
    generated_text_tokens,
    text_token_count,
)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "results/comparison/comparison.gif"
PANEL_WIDTH = 600
MARGIN = 24
TOKEN_SIZE = 18
TIME_FRAMES = 60  # frames spread evenly over the wall-time clock
FIRST_HOLD_MS, LAST_HOLD_MS = 1000, 3000


@dataclass
class ModelRun:
    """One model's generation, as states on its own clock: states[k] is reached at times[k] after nfe[k] passes."""

    name: str
    checkpoint: str
    states: list[rendering.StepState]
    times: list[float]
    nfe: list[int]
    text: str
    text_tokens: int  # tokens of the text after the prompt; end tokens not counted (sampling.text_token_count)
    unit: str  # what one step of this model is: "step" (diffusion) or "token" (autoregressive)
    extra: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.times[-1]

    def summary(self) -> dict:
        return {
            "model": self.name,
            "checkpoint": self.checkpoint,
            "seconds": round(self.seconds, 4),
            "forward_passes": self.nfe[-1],
            "text_tokens": self.text_tokens,
            "tokens_per_second": round(self.text_tokens / self.seconds, 1) if self.seconds > 0 else None,
            "text": self.text,
            **self.extra,
        }


def parse_args(argv=None) -> tuple[SamplingArguments, CompareArguments]:
    # One prompt, one sample per model; the GIF goes under results/ unless --output says otherwise.
    return cli.parse_args(
        (SamplingArguments, CompareArguments), argv, __doc__.splitlines()[0],
        defaults={"num_samples": 1, "output": DEFAULT_OUTPUT},
        helps={"output": f"The side-by-side GIF to write; results.json goes beside it. Default: {DEFAULT_OUTPUT}."},
    )


def check_output(path: str) -> Path:
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--output {path} is a directory; give a file name such as {out / 'comparison.gif'}")
    if out.suffix.lower() != ".gif":
        raise UsageError(f"--output {path} must end in .gif")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--output {path}: {parent} is a file, not a directory")
    return out


def load_models(args: SamplingArguments, cmp: CompareArguments):
    """Both models, before anything runs, so a bad path fails at once with a message naming it."""
    if not Path(cmp.gpt2_checkpoint).exists() and (Path(cmp.gpt2_checkpoint).is_absolute() or "/" in cmp.gpt2_checkpoint):
        raise UsageError(
            f"--gpt2-checkpoint {cmp.gpt2_checkpoint}: no such directory; train one with "
            "`python train.py --quick-test --objective ar` (writes results-ar/final-model) or pass a hub name such as gpt2"
        )
    checkpoint = models.load_checkpoint(args.checkpoint, args.device, dtype=args.dtype, compile=args.torch_compile)
    ar_model, ar_tokenizer = models.load_causal_lm(cmp.gpt2_checkpoint)
    return checkpoint, (ar_model.to(checkpoint.device).eval(), ar_tokenizer)


# ----------------------------------------------------------------------------- the two runs


def run_diffusion(args: SamplingArguments, checkpoint: models.Checkpoint) -> ModelRun:
    """The shared sampler (sampling.generate); each step's end is timed by the start of the next forward pass."""
    model = checkpoint.model
    stamps = []

    def before_forward(module, inputs):
        sampling.synchronize(checkpoint.device)
        stamps.append(time.perf_counter())

    # The encoder runs once per pass whether the sampler asks the whole model or the head at some positions.
    hook = model.base_model.register_forward_pre_hook(before_forward)
    try:
        out = sampling.generate(checkpoint, args, progress=False)
    finally:
        hook.remove()
    # stamps[k] is when forward k+1 began, i.e. when step k (which needed forward k) had finished; the untimed
    # warm-up pass before out.started is not a step.
    stamps = [stamp for stamp in stamps if stamp >= out.started]
    times = [0.0] + [stamp - out.started for stamp in stamps[1:]] + [out.seconds]
    states = rendering.trajectory_states(out.result, checkpoint.tokenizer, sample=0)
    tokens = generated_text_tokens(checkpoint.tokenizer, out.ids, out.result.fixed, checkpoint.line_by_line)[0]
    return ModelRun(
        "diffusion", args.checkpoint, states, times[: len(states)], list(range(len(states))), out.texts[0], tokens, "step",
        extra={"steps": len(states) - 1},
    )


def run_autoregressive(args: SamplingArguments, model, tokenizer, checkpoint: str) -> ModelRun:
    """The shared autoregressive sampler (sampling.sample_autoregressive) on one row, timed token by token."""
    out = sampling.sample_autoregressive(model, tokenizer, replace(args, num_samples=1))
    generated = out.generated[0]
    states = ar_states(tokenizer, out.prompt, generated)
    tokens = text_token_count(tokenizer, generated)
    return ModelRun("autoregressive", checkpoint, states, out.times, list(range(len(states))), out.texts[0], tokens, "token")


def ar_states(tokenizer, prompt: list[int], generated: list[int]) -> list[rendering.StepState]:
    """State k: the prompt (fixed) and the first k generated tokens, the k-th one new. The start token is left out."""
    prompt = prompt[1:] if prompt and prompt[0] == tokenization.start_token_id(tokenizer) else prompt
    states = []
    for k in range(len(generated) + 1):
        ids = prompt + generated[:k]
        labels = [rendering.FIXED] * len(prompt) + [rendering.REVEALED] * k
        if k:
            labels[-1] = rendering.NEW
        states.append(rendering.StepState(k, len(generated), ids, rendering.token_strings(tokenizer, ids), labels, [None] * len(ids),
                                         rendering.end_token_string(tokenizer)))
    return states


# ----------------------------------------------------------------------------- one clock, two panels


def clock_ticks(runs: list[ModelRun], clock: str) -> list[float]:
    """The clock value of each GIF frame: every forward pass, or evenly spaced wall times."""
    if clock == "nfe":
        return list(range(max(run.nfe[-1] for run in runs) + 1))
    end = max(run.seconds for run in runs)
    return [end * i / (TIME_FRAMES - 1) for i in range(TIME_FRAMES)]


def state_at(run: ModelRun, clock: str, tick: float) -> int:
    """Index of the last state `run` had reached when the clock showed `tick`."""
    marks = run.nfe if clock == "nfe" else run.times
    reached = 0
    for k, mark in enumerate(marks):
        if mark <= tick + 1e-12:
            reached = k
    return reached


def render_comparison(runs: list[ModelRun], clock: str) -> tuple[list[Image.Image], list[float]]:
    text_width = PANEL_WIDTH - 2 * MARGIN
    layouts = [
        [rendering.layout_tokens(s.tokens, s.labels, s.previous, text_width, TOKEN_SIZE, end_token=s.end_token, active=s.active) for s in run.states]
        for run in runs
    ]
    blocks = any(s.active is not None for run in runs for s in run.states)  # block-wise diffusion: mark the block
    text_height = max(height for layout in layouts for _, height in layout)
    header = 132
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend_height = rendering.draw_legend(probe, 0, 0, 2 * PANEL_WIDTH - 2 * MARGIN, 14, active=blocks)
    height = int(header + text_height + 24 + legend_height + MARGIN)
    ticks = clock_ticks(runs, clock)
    frames = []
    for tick in ticks:
        image = Image.new("RGB", (2 * PANEL_WIDTH, height), rendering.BACKGROUND)
        draw = ImageDraw.Draw(image)
        for p, (run, layout) in enumerate(zip(runs, layouts)):
            k = state_at(run, clock, tick)
            _panel(draw, p * PANEL_WIDTH, run, k, layout[k][0], tick, clock)
        legend_top = header + text_height + 24
        draw.line((PANEL_WIDTH, 12, PANEL_WIDTH, legend_top - 12), fill=rendering.PANEL, width=2)
        draw.line((MARGIN, legend_top - 12, 2 * PANEL_WIDTH - MARGIN, legend_top - 12), fill=rendering.PANEL, width=1)
        rendering.draw_legend(draw, MARGIN, legend_top, 2 * PANEL_WIDTH - 2 * MARGIN, 14,
                              labels=(rendering.FIXED, rendering.MASKED, rendering.NEW, rendering.REVEALED, rendering.REMASKED), active=blocks)
        frames.append(image)
    return frames, ticks


def _panel(draw, left: int, run: ModelRun, k: int, placed, tick: float, clock: str) -> None:
    right = left + PANEL_WIDTH - MARGIN
    x = left + MARGIN
    title = "Masked diffusion" if run.name == "diffusion" else "Autoregressive (GPT-2)"
    draw.text((x, 16), title, font=rendering.font(20, bold=True), fill=rendering.TEXT)
    draw.text((x, 44), rendering.fit_text(run.checkpoint, 13, right - x), font=rendering.font(13), fill=rendering.DIM)
    last = len(run.states) - 1
    clock_text = f"clock {tick:.3f} s" if clock == "time" else f"clock {int(tick)} forward passes"
    counter = f"{run.unit} {k}/{last}  forward passes {run.nfe[k]}  {run.times[k]:.3f} s"
    draw.text((x, 68), counter, font=rendering.font(14), fill=rendering.TEXT)
    done = k == last
    draw.text((x, 88), clock_text + ("   done" if done else ""), font=rendering.font(13),
              fill=rendering.COLOURS[rendering.NEW] if done else rendering.DIM)
    rendering.draw_bar(draw, (x, 110, right, 118), [(k / last if last else 1.0, rendering.COLOURS[rendering.FIXED])])
    rendering.draw_tokens(draw, placed, x, 132, TOKEN_SIZE)


def frame_durations(ticks: list[float], clock: str, frame_ms: int) -> list[int]:
    durations = [frame_ms] * len(ticks)
    durations[0] = max(frame_ms, FIRST_HOLD_MS)
    durations[-1] = max(frame_ms, LAST_HOLD_MS)
    return durations


# ----------------------------------------------------------------------------- report


TOKENS_NOTE = ("tokens: the text after the prompt; the end token that closes it is not counted, nor the end tokens "
               "that fill the rest of a diffusion row (the same for both models); tokens/s = tokens / wall s.")


def print_table(rows: list[dict], columns=None) -> None:
    """Plain-text table, one row per model, and a line saying how tokens are counted; extra columns (e.g.
    metrics) are passed in `columns`."""
    columns = columns or [
        ("model", "model", "{}"), ("seconds", "wall s", "{:.3f}"), ("forward_passes", "forward passes", "{}"),
        ("text_tokens", "tokens", "{}"), ("tokens_per_second", "tokens/s", "{:.1f}"),
    ]
    cells = [[fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns] for row in rows]
    widths = [max(len(head), *(len(c[i]) for c in cells)) for i, (_, head, _) in enumerate(columns)]
    print("  ".join(head.ljust(w) for (_, head, _), w in zip(columns, widths)) + "  text")
    for row, line in zip(rows, cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + row["text"])
    print(TOKENS_NOTE)


def write_results(out: Path, frames, durations, rows: list[dict], args, cmp) -> None:
    """GIF and results.json written under temporary names, then renamed: never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"prompt": args.prefix, "max_length": args.max_length, "clock": cmp.clock, "seed": args.seed, "models": rows}
    with cli.atomic_path(out) as gif, cli.atomic_path(out.with_name("results.json")) as table:
        rendering.save_gif(frames, durations, gif)
        table.write_text(json.dumps(results, indent=2) + "\n")


def main(argv=None) -> list[dict]:
    args, cmp = parse_args(argv)
    cli.log_to_stderr()
    out = check_output(args.output)
    if args.infill is not None:
        raise UsageError("--infill is not supported here: GPT-2 can only continue a prompt; use --prompt")
    args.check()
    args.prefix = clean_prefix(args.prefix)  # only whitespace: no prompt for either model, said in one line

    checkpoint, (ar, ar_tokenizer) = load_models(args, cmp)
    with checkpoint.forward_context():  # both models in the precision asked for (--dtype)
        runs = [run_diffusion(args, checkpoint), run_autoregressive(args, ar, ar_tokenizer, cmp.gpt2_checkpoint)]
    rows = [run.summary() for run in runs]

    frames, ticks = render_comparison(runs, cmp.clock)
    write_results(out, frames, frame_durations(ticks, cmp.clock, cmp.frame_ms), rows, args, cmp)
    print_table(rows)
    logger.info("%d frames written to %s", len(frames), out)
    if cmp.metrics:
        measure_both(args, checkpoint, (ar, ar_tokenizer), out.with_name("metrics.json"))
    return rows


def measure_both(args, checkpoint: models.Checkpoint, ar, path: Path) -> None:
    """--metrics: evaluation.report's table (bound vs exact perplexity, sample metrics, speed), printed and saved."""
    settings = replace(args, num_samples=32, prefix="", infill=None)
    table = evaluation.report(checkpoint, ar, None, settings=settings, seed=args.seed)
    print(tables.format_table(table))
    with cli.atomic_path(path) as tmp:
        tmp.write_text(json.dumps([{k: v for k, v in row.items() if k != "samples"} for row in table], indent=2) + "\n")


if __name__ == "__main__":
    cli.run(main)
