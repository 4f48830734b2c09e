"""visualize_generation.py and rendering.py: frames show exactly the sampler's trajectory, any token renders."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageChops, ImageDraw, ImageSequence

import visualize_generation
from textdiffusion import models, rendering, sampling
from textdiffusion.errors import SettingsError

REPO = Path(__file__).resolve().parent.parent


def _args(checkpoint, out, *extra):
    return ["--checkpoint", checkpoint, "--output-dir", str(out), "--max-length", "20", "--steps", "6", "--seed", "3", *extra]


def _trajectory(argv):
    """The trajectory the shared sampler produces for these arguments (same seed, so the same run)."""
    args, _ = visualize_generation.parse_args(argv)
    checkpoint = models.load_checkpoint(args.checkpoint, args.device)
    return sampling.generate(checkpoint, args).result, checkpoint.tokenizer


@pytest.mark.parametrize("strategy", ["confidence", "remask"])
def test_gif_frame_k_equals_trajectory_step_k(tiny_checkpoint, tmp_path, strategy):
    argv = _args(tiny_checkpoint, tmp_path / "vis", "--strategy", strategy, "--prompt", "tom found", "--fps", "2", "--hold", "1.5")
    visualize_generation.main(argv)
    result, tokenizer = _trajectory(argv)
    run = json.loads((tmp_path / "vis" / "run.json").read_text())
    states = run["states"]

    assert len(states) == len(result.trajectory) == 7
    assert run["settings"]["steps"] == 6
    for k, (state, step) in enumerate(zip(states, result.trajectory)):
        ids = step.ids[0, 1:].tolist()  # the start token is layout, not shown
        assert state["step"] == k
        assert state["ids"] == ids
        assert state["tokens"] == [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids)]
        masked = [i == tokenizer.mask_token_id for i in ids]
        assert [label in ("masked", "remasked") for label in state["labels"]] == masked
        assert [label == "new" for label in state["labels"]] == step.revealed[0, 1:].tolist()
        assert [label == "remasked" for label in state["labels"]] == step.remasked[0, 1:].tolist()
        assert state["active"] is None  # one block: nothing to mark
    assert all(label in ("fixed", "masked") for label in states[0]["labels"])
    assert "masked" not in states[-1]["labels"]

    # One GIF frame and one PNG per trajectory step; holds are longer durations, not repeated frames.
    with Image.open(tmp_path / "vis" / visualize_generation.GIF_NAME) as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert len(durations) == len(result.trajectory)
    assert durations[1:-1] == [500] * 5 and durations[0] == durations[-1] == 1500
    pngs = sorted((tmp_path / "vis" / "frames").glob("step_*.png"))
    assert [p.name for p in pngs] == [f"step_{k:03d}.png" for k in range(7)]
    assert (tmp_path / "vis" / "run.js").read_text().startswith("window.DIFFUSION_RUN = {")
    assert (tmp_path / "vis" / "view_animation.html").read_bytes() == (REPO / "view_animation.html").read_bytes()


def test_rerun_with_fewer_steps_leaves_no_stale_frames(tiny_checkpoint, tmp_path):
    visualize_generation.main(_args(tiny_checkpoint, tmp_path, "--steps", "6"))
    visualize_generation.main(_args(tiny_checkpoint, tmp_path, "--steps", "3"))
    assert len(list((tmp_path / "frames").glob("*.png"))) == 4
    assert not list(tmp_path.glob(".tmp-*"))


def _hand_made_result():
    """Positions: 0 start, 1 prefix, 2-4 generated. Step 1 reveals 2 and 3, step 2 reveals 4 and re-masks 3."""
    m = 4  # mask id of the story tokenizer
    ids = [[0, 10, m, m, m], [0, 10, 20, 21, m], [0, 10, 20, m, 22], [0, 10, 20, 23, 22]]
    revealed = [[0, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]
    remasked = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
    steps = [
        sampling.TrajectoryStep(torch.tensor([i]), torch.tensor([r]).bool(), torch.tensor([x]).bool(), torch.zeros(1, 5))
        for i, r, x in zip(ids, revealed, remasked)
    ]
    fixed = torch.tensor([[1, 1, 0, 0, 0]]).bool()
    return sampling.SampleResult(ids=steps[-1].ids, fixed=fixed, trajectory=steps, nfe=3)


def test_states_label_fixed_masked_new_earlier_and_remasked_positions(story_tokenizer):
    assert story_tokenizer.mask_token_id == 4
    states = rendering.trajectory_states(_hand_made_result(), story_tokenizer)
    assert [s.labels for s in states] == [
        ["fixed", "masked", "masked", "masked"],
        ["fixed", "new", "new", "masked"],
        ["fixed", "revealed", "remasked", "new"],
        ["fixed", "revealed", "new", "revealed"],
    ]
    assert states[2].previous[2] == rendering.token_strings(story_tokenizer, [21])[0]
    assert states[2].previous[:2] == [None, None]
    assert [s.step for s in states] == [0, 1, 2, 3] and all(s.steps == 3 for s in states)


def test_token_strings_keep_the_leading_space(story_tokenizer):
    ids = story_tokenizer("the day tom", add_special_tokens=False)["input_ids"]
    assert "".join(rendering.token_strings(story_tokenizer, ids)) == "the day tom"
    assert rendering.token_strings(story_tokenizer, ids)[1].startswith(" ")


@pytest.mark.parametrize(
    "token, shown",
    [("\x07", "\\x07"), ("a\nb", "a\u21b5b"), ("\t", "\u2192"), (" ", "\u2423"), ("", "\u2205"), ("\x1b[0m", "\\x1b[0m"),
     ("\u200b", "\\u200b"), ("\U0001f600", "\\U0001f600"), (" the", " the"), ("<s>", "<s>")],
)
def test_display_token_shows_every_character_on_one_line(token, shown):
    assert rendering.display_token(token) == shown


def test_control_character_tokens_render_without_crashing_and_within_the_width():
    tokens = ["\x07", "\x00\x01", "a\nb", "\t", "   ", "", "\u2728", "\U0001f600", "\ud800", "x" * 300, " the", "\r\n", "<mask>"]
    labels = ["new", "revealed", "fixed", "new", "revealed", "revealed", "new", "revealed", "revealed", "revealed", "new", "revealed", "masked"]
    previous = [None] * len(tokens)
    placed, height = rendering.layout_tokens(tokens, labels, previous, 400, 20)
    assert all(p.x >= 0 and p.x + p.width <= 400 + 1e-6 for p in placed)
    assert height > 20 * 3
    image = Image.new("RGB", (440, int(height) + 40))
    rendering.draw_tokens(ImageDraw.Draw(image), placed, 20, 20, 20)
    assert image.getbbox() is not None  # something was drawn

    state = rendering.StepState(1, 1, list(range(len(tokens))), tokens, labels, previous)
    frames = visualize_generation.render_frames([state, state], {"model": "m", "settings": {"schedule": "cosine", "strategy": "remask", "sampling": "topk", "seed": 0}})
    assert len(frames) == 2 and frames[0].size[0] == visualize_generation.WIDTH


def test_frames_have_one_size_and_fit_the_longest_step(story_tokenizer):
    states = rendering.trajectory_states(_hand_made_result(), story_tokenizer)
    frames = visualize_generation.render_frames(states, {"model": "m", "settings": {"schedule": "s", "strategy": "x", "sampling": "topk", "seed": 0}})
    assert len({f.size for f in frames}) == 1
    assert visualize_generation.frame_durations(4, 1.25, 2.0) == [2000, 800, 800, 2000]


def test_output_dir_that_is_a_file_is_refused(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    with pytest.raises(SettingsError, match="is a file"):
        visualize_generation.main(_args(tiny_checkpoint, blocker / "vis"))
    with pytest.raises(SettingsError, match="is a file"):
        visualize_generation.main(_args(tiny_checkpoint, blocker))
    assert blocker.read_text() == "not a directory"


def test_frames_sample_outside_the_samples_is_refused_before_anything_is_written(tiny_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match=r"--frames-sample 2: choose 0 to 1 \(--num-samples 2\)"):
        visualize_generation.main(_args(tiny_checkpoint, tmp_path / "vis", "--num-samples", "2", "--frames-sample", "2"))
    assert not (tmp_path / "vis").exists()


def test_gpt2_checkpoint_is_refused_as_diffusion_model(tiny_gpt2_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match="not a masked LM"):
        visualize_generation.main(_args(tiny_gpt2_checkpoint, tmp_path / "vis"))
    assert not (tmp_path / "vis").exists()


def test_missing_checkpoint_is_one_line_error_and_exit_2(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-such-model"
    # The script's own __main__ block, in this process (a new interpreter would re-import torch: slow).
    monkeypatch.setattr(sys, "argv", ["visualize_generation.py", "--checkpoint", str(missing), "--output-dir", str(tmp_path / "vis")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "visualize_generation.py"), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and str(missing) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "vis").exists()


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        visualize_generation.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--output-dir" in out and "--fps" in out and "--strategy" in out


def test_a_run_of_end_tokens_is_one_chip_and_masked_slots_are_never_merged():
    tokens = ["a", "</s>", "</s>", "</s>", "<mask>", "</s>", "</s>", "b", "</s>", "</s>"]
    labels = ["fixed", "new", "new", "new", "masked", "fixed", "fixed", "new", "revealed", "revealed"]
    active = [False, False, False, True, True, False, False, False, False, False]
    shown, kinds, _, marked = rendering.collapse_end_runs(tokens, labels, [None] * 10, "</s>", active)
    assert shown == ["a", "</s> \u00d73", "<mask>", "</s> \u00d72", "b", "</s> \u00d72"]
    assert kinds == ["fixed", "new", "masked", "fixed", "new", "revealed"]
    assert marked == [False, True, True, False, False, False]  # a chip is active if any of its run is
    assert rendering.collapse_end_runs(tokens, labels, [None] * 10, "</s>")[3] is None
    assert rendering.collapse_end_runs(tokens, labels, [None] * 10, None)[0] == tokens
    placed, _ = rendering.layout_tokens(tokens, labels, [None] * 10, 400, 20, end_token="</s>")
    assert sum("\u00d73" in p.text for p in placed) == 1 and len(placed) == 6


def test_an_end_chip_whose_tokens_differ_in_state_is_split_into_one_part_per_state():
    # "</s> x4" where one end token came earlier and three this step (in any order): two parts, each its state's.
    tokens = ["tom", " found", " it", *["</s>"] * 4]
    labels = ["fixed", "fixed", "revealed", "new", "revealed", "new", "new"]
    active = [False, False, False, False, True, False, False]
    shown, kinds, _, marked = rendering.collapse_end_runs(tokens, labels, [None] * 7, "</s>", active)
    assert shown == ["tom", " found", " it", "</s> \u00d71", " </s> \u00d73"]
    assert kinds == ["fixed", "fixed", "revealed", "revealed", "new"]
    assert marked == [False, False, False, True, False]  # the part holding the active token
    fixed_and_new = rendering.collapse_end_runs(["</s>"] * 3, ["new", "fixed", "new"], [None] * 3, "</s>")
    assert fixed_and_new[:2] == (["</s> \u00d71", " </s> \u00d72"], ["fixed", "new"])

    # The frame draws each part in its own state's colours: the new part on the new fill, the earlier one without.
    state = rendering.StepState(2, 2, list(range(7)), tokens, labels, [None] * 7, "</s>")
    frame = visualize_generation.render_frames([state], {"model": "m", "settings": {"schedule": "s", "strategy": "x", "sampling": "topk", "seed": 0}})[0]
    width = visualize_generation.WIDTH - 2 * visualize_generation.MARGIN
    size = visualize_generation.TOKEN_SIZE
    placed, _ = rendering.layout_tokens(tokens, labels, [None] * 7, width, size, end_token="</s>")
    ascent, descent = rendering.font(size).getmetrics()

    def colours(piece):
        x, y = visualize_generation.MARGIN + piece.x, visualize_generation.TEXT_TOP + piece.y
        return set(frame.crop((int(x) + 1, int(y) + 1, int(x + piece.width) - 1, int(y + ascent + descent) - 1)).getdata())

    earlier, new = placed[3], placed[4]
    assert (earlier.text, earlier.label, new.text, new.label) == ("</s> \u00d71", "revealed", " </s> \u00d73", "new")
    assert rendering.COLOURS["revealed"] in colours(earlier) and rendering.NEW_FILL not in colours(earlier)
    assert rendering.COLOURS["new"] not in colours(earlier)
    assert {rendering.NEW_FILL, rendering.COLOURS["new"]} <= colours(new) and rendering.COLOURS["revealed"] not in colours(new)


def test_the_frames_progress_bars_are_labelled_with_what_they_measure():
    tokens = ["tom", " found", " a", "<mask>", " ball"]
    state = rendering.StepState(2, 6, list(range(5)), tokens, ["fixed", "fixed", "revealed", "masked", "new"], [None] * 5)
    bars = visualize_generation.progress_bars(state)
    assert [label for label, _ in bars] == ["steps done 2/6", "text revealed 67%"]
    assert [share for share, _ in bars[0][1]] == [2 / 6]
    assert [share for share, _ in bars[1][1]] == [1 / 3, 1 / 3, 1 / 3]  # earlier, this step, still masked

    frame = visualize_generation.render_frames([state], {"model": "m", "settings": {"schedule": "s", "strategy": "x", "sampling": "topk", "seed": 0}})[0]
    for (label, _), top in zip(bars, visualize_generation.BAR_TOPS):
        # The label, drawn alone where the frame draws it, gives the same pixels as the frame has there.
        alone = Image.new("RGB", frame.size, rendering.BACKGROUND)
        ImageDraw.Draw(alone).text((visualize_generation.MARGIN, top - 3), label, font=rendering.font(visualize_generation.BAR_LABEL_SIZE), fill=rendering.DIM)
        box = (0, top - 4, visualize_generation.MARGIN + visualize_generation.BAR_LABEL_WIDTH - 2, top + visualize_generation.BAR_HEIGHT + 2)
        assert alone.crop(box).getbbox() is not None  # the label has ink
        assert ImageChops.difference(alone.crop(box), frame.crop(box)).getbbox() is None
        bar_left = visualize_generation.MARGIN + visualize_generation.BAR_LABEL_WIDTH
        assert alone.crop((bar_left, top, bar_left + 1, top + 1)).getpixel((0, 0)) == rendering.BACKGROUND  # the label stops before its bar


def test_visualize_prints_every_samples_text_and_the_paths_it_wrote(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "vis"
    visualize_generation.main(_args(tiny_checkpoint, out, "--num-samples", "3", "--frames-sample", "2", "--steps", "3"))
    run = json.loads((out / "run.json").read_text())
    texts = [sample["text"] for sample in run["samples"]]
    paths = [
        f"frames: {out / 'frames'} (4 PNGs, sample 2)",
        f"GIF:    {out / visualize_generation.GIF_NAME}",
        f"viewer: {out / 'view_animation.html'}",
        f"data:   {out / 'run.json'} (and run.js, which the viewer reads)",
    ]
    # The random tiny model writes control characters too (a "\r" in a text): compare the whole output.
    assert len(set(texts)) == 3
    assert capsys.readouterr().out == "".join(f"sample {k}: {text}\n" for k, text in enumerate(texts)) + "\n".join(paths) + "\n"
    assert len(list((out / "frames").glob("*.png"))) == 4 and (out / visualize_generation.GIF_NAME).is_file()

    visualize_generation.main(_args(tiny_checkpoint, out, "--steps", "3"))  # one sample: its text alone
    assert capsys.readouterr().out.startswith(json.loads((out / "run.json").read_text())["text"] + "\nframes: ")


class _Browser:
    def __init__(self, opens=True):
        self.opens, self.urls = opens, []

    def open(self, url):
        self.urls.append(url)
        return self.opens


def test_open_without_a_browser_or_a_display_says_so_in_one_line(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import webbrowser

    page = tmp_path / "vis" / "view_animation.html"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    browser = _Browser()
    monkeypatch.setattr(webbrowser, "get", lambda: browser)
    visualize_generation.main(_args(tiny_checkpoint, tmp_path / "vis", "--steps", "2", "--open"))
    assert browser.urls == [page.resolve().as_uri()] and "--open" not in capsys.readouterr().err

    def no_browser():
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", no_browser)
    visualize_generation.main(_args(tiny_checkpoint, tmp_path / "vis", "--steps", "2", "--open"))
    err = [line for line in capsys.readouterr().err.splitlines() if "--open" in line]  # (not the library's loading bars)
    assert err == [f"--open: no web browser could be found; the files are written: open {page.resolve()} in a browser by hand"]
    monkeypatch.setattr(webbrowser, "get", lambda: _Browser(opens=False))  # found, but it did not open
    assert visualize_generation.open_viewer(page) == err[0]

    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(webbrowser, "get", lambda: browser)
    assert visualize_generation.open_viewer(page).startswith("--open: no display (DISPLAY and WAYLAND_DISPLAY are unset)")
    assert len(browser.urls) == 1  # no browser was started without a display


def test_trajectory_states_name_the_end_token(story_tokenizer):
    states = rendering.trajectory_states(_hand_made_result(), story_tokenizer)
    assert {s.end_token for s in states} == {"</s>"}
    assert states[0].to_dict()["end_token"] == "</s>"  # the viewer's run data carries it


def test_each_token_keeps_the_confidence_of_the_step_that_revealed_it(story_tokenizer):
    result = _hand_made_result()
    # What the sampler records: the probability each position's token was drawn with; a new block starts at 0 again.
    confidence = [[0, 0, 0, 0, 0], [0, 0, 0.5, 0.25, 0], [0, 0, 0, 0, 0.75], [0, 0, 0, 0.125, 0.75]]
    for step, row in zip(result.trajectory, confidence):
        step.confidence = torch.tensor([row], dtype=torch.float)
    states = rendering.trajectory_states(result, story_tokenizer)
    assert [s.confidence for s in states] == [
        [None, None, None, None],
        [None, 0.5, 0.25, None],
        [None, 0.5, None, 0.75],  # position 2 keeps step 1's 0.5; the re-masked position has none
        [None, 0.5, 0.125, 0.75],  # revealed again: the new draw's
    ]
    assert states[3].to_dict()["confidence"] == [None, 0.5, 0.125, 0.75]  # the viewer's run data carries it


def test_states_carry_the_candidates_of_the_positions_each_step_revealed(tiny_mlm, story_tokenizer):
    ids = sampling.build_inputs(story_tokenizer, "tom found", 16, 1)
    config = sampling.SamplerConfig(steps=4, strategy="confidence", sampling="greedy", candidates=3)
    result = sampling.sample(tiny_mlm, ids, story_tokenizer.mask_token_id, config, [], torch.Generator().manual_seed(0))
    states = rendering.trajectory_states(result, story_tokenizer)
    assert states[0].candidates is None
    for state in states[1:]:
        for token, label, weighed in zip(state.tokens, state.labels, state.candidates):
            assert (weighed is not None) == (label == rendering.NEW)
            if weighed:
                assert len(weighed) == 3 and weighed[0][0] == token  # greedy takes the top one
                assert [p for _, p in weighed] == sorted((p for _, p in weighed), reverse=True)


def test_states_mark_the_block_each_step_of_a_block_wise_run_worked_on(tiny_checkpoint, tmp_path):
    argv = _args(tiny_checkpoint, tmp_path / "vis", "--block-size", "4", "--steps", "8", "--prompt", "tom", "--strategy", "random")
    visualize_generation.main(argv)
    result, _ = _trajectory(argv)
    states = json.loads((tmp_path / "vis" / "run.json").read_text())["states"]
    assert len(states) == len(result.trajectory) == 9
    assert states[0]["active"] is None
    generated = [i for i, fixed in enumerate(result.fixed[0, 1:].tolist()) if not fixed]
    blocks = []
    for state, step in zip(states[1:], result.trajectory[1:]):
        assert state["active"] == step.active[0, 1:].tolist()
        active = [i for i, a in enumerate(state["active"]) if a]
        # a block: up to 4 consecutive positions, holding everything this step revealed
        assert active == list(range(active[0], active[0] + len(active))) and 1 <= len(active) <= 4
        assert all(state["active"][i] for i, label in enumerate(state["labels"]) if label == "new")
        if not blocks or blocks[-1] != active:
            blocks.append(active)
    # the blocks follow each other left to right, each once, and together cover the generated span
    assert [i for block in blocks for i in block] == sorted({i for block in blocks for i in block})
    assert set(generated) <= {i for block in blocks for i in block}
    assert json.loads((tmp_path / "vis" / "run.json").read_text())["settings"]["block_size"] == 4


def _block_state(active):
    """A hand-made step: prompt, two revealed tokens, a new one, masked slots; `active` marks a block (or None)."""
    tokens = ["tom", " found", " a", " red", "<mask>", "<mask>", "<mask>", "<mask>"]
    labels = ["fixed", "fixed", "revealed", "new", "masked", "masked", "masked", "masked"]
    return rendering.StepState(1, 2, list(range(8)), tokens, labels, [None] * 8, None, None, active)


def test_marking_the_active_block_changes_pixels_only_inside_the_block():
    block = [False, False, False, True, True, True, False, False]
    marked, plain = _block_state(block), _block_state(None)
    info = {"model": "m", "settings": {"schedule": "s", "strategy": "x", "sampling": "topk", "seed": 0}}
    frames = visualize_generation.render_frames([marked, plain], info)  # one run: one legend, one size

    width = visualize_generation.WIDTH - 2 * visualize_generation.MARGIN
    size = visualize_generation.TOKEN_SIZE
    with_block, text_height = rendering.layout_tokens(marked.tokens, marked.labels, marked.previous, width, size, active=marked.active)
    without = rendering.layout_tokens(plain.tokens, plain.labels, plain.previous, width, size)[0]
    assert [(p.x, p.y, p.text) for p in with_block] == [(p.x, p.y, p.text) for p in without]  # nothing moves
    assert [p.active for p in with_block] == block

    bands = rendering.active_bands(with_block, visualize_generation.MARGIN, visualize_generation.TEXT_TOP, size)
    assert len(bands) == 1
    x0, y0, x1, y1 = bands[0]
    first, last = with_block[3], with_block[5]
    assert x0 < visualize_generation.MARGIN + first.x and x1 > visualize_generation.MARGIN + last.x + last.width
    diff = ImageChops.difference(frames[0], frames[1])
    left, top, right, bottom = diff.getbbox()
    assert x0 <= left and y0 <= top and right <= x1 + 1 and bottom <= y1 + 1  # only inside the band
    assert right - left > (x1 - x0) * 0.9  # and across the whole block

    def count(frame, box=None):
        return sum(px == rendering.ACTIVE_OUTLINE for px in (frame.crop(box) if box else frame).getdata())

    text_bottom = visualize_generation.TEXT_TOP + text_height  # the legend is below
    full = frames[0].width
    assert count(frames[0], (0, 0, full, text_bottom)) == count(frames[0], (int(x0), int(y0), int(x1) + 1, int(y1) + 1)) > 0
    assert count(frames[1], (0, 0, full, text_bottom)) == 0  # a step without a block has no marking
    assert count(frames[1], (0, text_bottom, full, frames[1].height)) > 0  # the legend's swatch for it

    plain_run = visualize_generation.render_frames([plain], info)[0]
    assert count(plain_run) == 0  # an ordinary run has no active block and no legend entry for one
