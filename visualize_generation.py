"""Watch a masked-diffusion model write: frames, a GIF and the data for view_animation.html.

    python visualize_generation.py --checkpoint results/final-model --prompt "tom found a red ball"

The sampler (diffusion.sample) records every step; this script only draws that trajectory, so a frame can never
show a step the sampler did not take. The frames and the GIF show sample --frames-sample (default the first); with
--num-samples N the viewer holds all N and a selector switches between them. Output, all in --output-dir:
frames/step_000.png ..., text_diffusion_animation.gif, run.json, run.js and a copy of view_animation.html
(open it from the file system, or serve the directory with `python -m http.server`). It prints every sample's
text and the paths it wrote; --open says in one line when it found no browser to open the viewer in.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from config import SamplingArguments, VisualizationArguments
from textdiffusion import cli, models, rendering, sampling
from textdiffusion.cli import UsageError

VIEWER = Path(__file__).resolve().parent / "view_animation.html"
GIF_NAME = "text_diffusion_animation.gif"
WIDTH = 960
MARGIN = 28
TOKEN_SIZE = 22
TEXT_TOP = 150  # the tokens start this far down a frame, below the header and the bars
BAR_TOPS = (84, 104)  # the two progress bars: steps done, and the share of the text revealed
BAR_HEIGHT = 10
BAR_LABEL_SIZE = 13
BAR_LABEL_WIDTH = 170  # each bar's label stands left of it
REVEALED_BAR = (170, 170, 170)
SETTINGS = ("schedule", "strategy", "steps", "seed", "sampling", "temperature", "top_k", "top_p", "threshold", "block_size", "max_length")


def parse_args(argv=None) -> tuple[SamplingArguments, VisualizationArguments]:
    # One sample is drawn, so generate one unless the user asks for more; the viewer shows 3 candidates on hover.
    return cli.parse_args((SamplingArguments, VisualizationArguments), argv, __doc__.splitlines()[0], defaults={"num_samples": 1, "candidates": 3})


def check_output_dir(path: str) -> Path:
    out = Path(path)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--output-dir {path}: {parent} is a file, not a directory")
    return out


def run_settings(args: SamplingArguments, result, text: str, block_size: int | None = None) -> dict:
    """The run's settings as sampled: the steps it took, and the block size it used (a block-diffusion checkpoint's
    own, `block_size`, whatever --block-size says)."""
    settings = {name: getattr(args, name) for name in SETTINGS}
    settings["steps"] = len(result.trajectory) - 1
    settings["block_size"] = block_size or args.block_size
    return {
        "format": "text-diffusion-run",
        "version": 3,
        "model": args.checkpoint,
        "prompt": args.infill if args.infill is not None else args.prefix,
        "mode": "infill" if args.infill is not None else "prefix",
        "settings": settings,
        "nfe": result.nfe,
        "text": text,
    }


# ----------------------------------------------------------------------------- frames


def frame_durations(count: int, fps: float, hold: float) -> list[int]:
    """Milliseconds per frame: 1/fps per step, the first and last frame held for `hold` seconds."""
    step_ms = 1000.0 / fps
    durations = [step_ms] * count
    durations[0] = max(step_ms, hold * 1000.0)
    durations[-1] = max(step_ms, hold * 1000.0)
    return [round(d) for d in durations]


def render_frames(states: list[rendering.StepState], info: dict) -> list[Image.Image]:
    """One image per state, all the same size (tall enough for the longest step). A block-wise run marks the block
    each step worked on, and its legend says so."""
    text_width = WIDTH - 2 * MARGIN
    layouts = [
        rendering.layout_tokens(s.tokens, s.labels, s.previous, text_width, TOKEN_SIZE, end_token=s.end_token, active=s.active) for s in states
    ]
    blocks = any(s.active is not None for s in states)
    text_height = max(height for _, height in layouts)
    legend_top = TEXT_TOP + text_height + 24
    legend_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend_height = rendering.draw_legend(legend_probe, MARGIN, 0, text_width, 15, active=blocks)
    height = int(legend_top + legend_height + MARGIN)
    return [_frame(state, placed, info, height, legend_top, blocks) for state, (placed, _) in zip(states, layouts)]


def _span(state: rendering.StepState) -> tuple[int, int, int]:
    """(positions the sampler writes, how many are masked now, how many this step revealed)."""
    span = len(state.labels) - state.count(rendering.FIXED)
    return span, state.count(rendering.MASKED) + state.count(rendering.REMASKED), state.count(rendering.NEW)


def progress_bars(state: rendering.StepState) -> list[tuple[str, list]]:
    """The frame's two bars, each (its label, its (share, colour) parts): the sampler's steps done, and the share of
    the generated span revealed (earlier in grey, this step in green) and still masked."""
    span, masked, new = _span(state)
    revealed = span - masked
    done = state.step / state.steps if state.steps else 1.0
    share = (lambda n: n / span) if span else (lambda n: 0.0)
    return [
        (f"steps done {state.step}/{state.steps}", [(done, rendering.COLOURS[rendering.FIXED])]),
        (f"text revealed {share(revealed):.0%}",
         [(share(revealed - new), REVEALED_BAR), (share(new), rendering.COLOURS[rendering.NEW]), (share(masked), rendering.COLOURS[rendering.MASKED])]),
    ]


def share_counts(state: rendering.StepState) -> str:
    span, masked, new = _span(state)
    revealed, share_masked = span - masked, masked / span if span else 0.0
    return (f"revealed {revealed}/{span} ({1 - share_masked:.0%})   masked {masked}/{span} ({share_masked:.0%})   "
            f"new this step {new}   re-masked {state.count(rendering.REMASKED)}")


def _frame(state: rendering.StepState, placed, info: dict, height: int, legend_top: float, blocks: bool) -> Image.Image:
    image = Image.new("RGB", (WIDTH, height), rendering.BACKGROUND)
    draw = ImageDraw.Draw(image)
    right = WIDTH - MARGIN
    s = info["settings"]
    title = f"Masked diffusion  step {state.step}/{state.steps}"
    draw.text((MARGIN, 18), title, font=rendering.font(26, bold=True), fill=rendering.TEXT)
    subtitle = f"{info['model']}  |  {s['schedule']} schedule, {s['strategy']}, {s['sampling']}, seed {s['seed']}"
    if s.get("block_size"):
        subtitle += f", blocks of {s['block_size']}"
    draw.text((MARGIN, 56), rendering.fit_text(subtitle, 14, right - MARGIN), font=rendering.font(14), fill=rendering.DIM)

    for (label, parts), top in zip(progress_bars(state), BAR_TOPS):
        draw.text((MARGIN, top - 3), label, font=rendering.font(BAR_LABEL_SIZE), fill=rendering.DIM)
        rendering.draw_bar(draw, (MARGIN + BAR_LABEL_WIDTH, top, right, top + BAR_HEIGHT), parts)
    draw.text((MARGIN, 124), share_counts(state), font=rendering.font(14), fill=rendering.DIM)

    rendering.draw_tokens(draw, placed, MARGIN, TEXT_TOP, TOKEN_SIZE)
    draw.line((MARGIN, legend_top - 12, right, legend_top - 12), fill=rendering.PANEL, width=1)
    rendering.draw_legend(draw, MARGIN, legend_top, right - MARGIN, 15, active=blocks)
    return image


# ----------------------------------------------------------------------------- output


def write_outputs(out: Path, states, frames, durations, info: dict) -> None:
    """Write everything into a fresh directory beside `out`, then move it in: no half-written run is left."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        (tmp / "frames").mkdir()
        width = max(3, len(str(len(frames) - 1)))
        for k, frame in enumerate(frames):
            frame.save(tmp / "frames" / f"step_{k:0{width}d}.png")
        rendering.save_gif(frames, durations, tmp / GIF_NAME)
        data = dict(info, frame_ms=durations[1] if len(durations) > 2 else durations[0], hold_ms=durations[0])
        data["states"] = [state.to_dict() for state in states]
        text = json.dumps(data, ensure_ascii=True)
        (tmp / "run.json").write_text(text + "\n")
        # A script, not a fetch: browsers refuse fetch() of a file:// URL, but load a <script src> beside the page.
        (tmp / "run.js").write_text(f"window.DIFFUSION_RUN = {text};\n")
        shutil.copyfile(VIEWER, tmp / VIEWER.name)
        shutil.rmtree(out / "frames", ignore_errors=True)  # old frames of a longer run would otherwise remain
        for item in tmp.iterdir():
            item.replace(out / item.name)


def main(argv=None) -> dict:
    args, vis = parse_args(argv)
    cli.log_to_stderr()
    out = check_output_dir(vis.output_dir)
    if vis.fps <= 0 or vis.hold < 0:
        raise UsageError(f"--fps must be > 0 and --hold >= 0 (got {vis.fps}, {vis.hold})")

    args.check()
    checkpoint = models.load_checkpoint(args.checkpoint, args.device, dtype=args.dtype, compile=args.torch_compile)
    if not 0 <= vis.frames_sample < args.num_samples:
        raise UsageError(f"--frames-sample {vis.frames_sample}: choose 0 to {args.num_samples - 1} (--num-samples {args.num_samples})")
    generation = sampling.generate(checkpoint, args)
    every = [rendering.trajectory_states(generation.result, checkpoint.tokenizer, sample=k) for k in range(args.num_samples)]
    shown = vis.frames_sample
    states = every[shown]
    info = run_settings(generation.settings, generation.result, generation.texts[shown], checkpoint.block_size)
    info["seconds"] = round(generation.seconds, 4)
    info["sample"] = shown
    if args.num_samples > 1:
        info["samples"] = [{"text": text, "states": [s.to_dict() for s in sample_states]} for text, sample_states in zip(generation.texts, every)]

    frames = render_frames(states, info)
    write_outputs(out, states, frames, frame_durations(len(frames), vis.fps, vis.hold), info)
    print_outputs(out, generation.texts, shown, len(frames))
    if vis.open and (problem := open_viewer(out / VIEWER.name)):
        print(problem, file=sys.stderr)
    return info


def print_outputs(out: Path, texts: list[str], shown: int, frames: int) -> None:
    """Every sample's text, then where each file went (the frames and the GIF draw sample `shown`)."""
    for k, text in enumerate(texts):
        print(f"sample {k}: {text}" if len(texts) > 1 else text)
    drawn = f", sample {shown}" if len(texts) > 1 else ""
    print(f"frames: {out / 'frames'} ({frames} PNGs{drawn})")
    print(f"GIF:    {out / GIF_NAME}")
    print(f"viewer: {out / VIEWER.name}")
    print(f"data:   {out / 'run.json'} (and run.js, which the viewer reads)")


def open_viewer(page: Path) -> str | None:
    """Open the viewer in the user's browser; None when it opened, else a one-line message saying why not and how
    to open it by hand."""
    import os
    import webbrowser

    by_hand = f"the files are written: open {page.resolve()} in a browser by hand"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return f"--open: no display (DISPLAY and WAYLAND_DISPLAY are unset), so no browser was started; {by_hand}"
    try:
        opened = webbrowser.get().open(page.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    return None if opened else f"--open: no web browser could be found; {by_hand}"


if __name__ == "__main__":
    cli.run(main)
