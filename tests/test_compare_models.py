"""compare_models.py: one clock drives both panels; each panel shows its own model's real steps."""

import itertools
import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageSequence

import compare_models
from textdiffusion import models, rendering
from textdiffusion.data import tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.sampling import prompts

REPO = Path(__file__).resolve().parent.parent


def _argv(roberta, gpt2, output, *extra):
    return [
        "--roberta-checkpoint", roberta, "--gpt2-checkpoint", gpt2, "--output", str(output),
        "--prompt", "tom found", "--max-length", "20", "--steps", "5", "--seed", "1", *extra,
    ]


def test_nfe_clock_gif_has_one_frame_per_forward_pass_with_both_panels(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, capsys):
    out = tmp_path / "cmp" / "comparison.gif"
    rows = compare_models.main(_argv(tiny_checkpoint, tiny_gpt2_checkpoint, out, "--clock", "nfe"))
    diffusion_row, ar_row = rows
    assert diffusion_row["model"] == "diffusion" and ar_row["model"] == "autoregressive"
    assert diffusion_row["forward_passes"] == 5
    # GPT-2: one forward pass per generated token, at most the room left after <s> and the prompt.
    prompt_tokens = 1 + len(tokenization.load_tokenizer(tiny_gpt2_checkpoint)("tom found", add_special_tokens=False)["input_ids"])
    # GPT-2: one forward pass per drawn token, the end token that stops it included but not counted as text.
    assert ar_row["text_tokens"] <= ar_row["forward_passes"] <= min(ar_row["text_tokens"] + 1, 20 - prompt_tokens)
    with Image.open(out) as gif:
        assert gif.size == (2 * compare_models.PANEL_WIDTH, gif.size[1])
        frames = sum(1 for _ in ImageSequence.Iterator(gif))
    assert frames == max(diffusion_row["forward_passes"], ar_row["forward_passes"]) + 1
    saved = json.loads((out.parent / "results.json").read_text())
    assert saved["models"] == rows and saved["clock"] == "nfe"
    table = capsys.readouterr().out
    assert "forward passes" in table and "tokens/s" in table and compare_models.TOKENS_NOTE in table
    assert diffusion_row["text"] in table and ar_row["text"] in table


def test_time_clock_shows_each_model_at_its_measured_step(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path):
    args, cmp = compare_models.parse_args(_argv(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path / "c.gif"))
    checkpoint, (ar, ar_tok) = compare_models.load_models(args, cmp)
    runs = [compare_models.run_diffusion(args, checkpoint), compare_models.run_autoregressive(args, ar, ar_tok, "gpt2")]
    for run in runs:
        assert len(run.times) == len(run.states) == len(run.nfe)
        assert run.times[0] == 0.0 and all(a <= b for a, b in zip(run.times, run.times[1:]))
    ticks = compare_models.clock_ticks(runs, "time")
    assert len(ticks) == compare_models.TIME_FRAMES and ticks[-1] == max(run.seconds for run in runs)
    for run in runs:
        shown = [compare_models.state_at(run, "time", t) for t in ticks]
        assert shown[0] == 0 and shown[-1] == len(run.states) - 1
        assert all(a <= b for a, b in itertools.pairwise(shown))  # the clock never runs backwards
        for t, k in zip(ticks, shown):
            assert run.times[k] <= t + 1e-9


def test_autoregressive_panel_appends_one_token_per_state(story_tokenizer):
    states = compare_models.ar_states(story_tokenizer, [0, 50, 51], [60, 61, 2])
    assert [s.ids for s in states] == [[50, 51], [50, 51, 60], [50, 51, 60, 61], [50, 51, 60, 61, 2]]
    assert states[2].labels == ["fixed", "fixed", "revealed", "new"]


def test_kv_cache_decoding_matches_full_recompute(tiny_gpt2_checkpoint):
    args, _ = compare_models.parse_args(["--prompt", "tom found", "--max-length", "14", "--sampling", "greedy"])
    model, tokenizer = models.load_causal_lm(tiny_gpt2_checkpoint)
    run = compare_models.run_autoregressive(args, model.eval(), tokenizer, tiny_gpt2_checkpoint)
    ids = list(run.states[0].ids)
    start = tokenization.start_token_id(tokenizer)
    with torch.no_grad():
        for expected in run.states[-1].ids[len(ids):]:
            logits = model(input_ids=torch.tensor([[start] + ids])).logits[0, -1]
            banned = [i for i in tokenization.special_token_ids(tokenizer) if i != tokenization.end_token_id(tokenizer)]
            logits[banned] = float("-inf")
            assert int(logits.argmax()) == expected
            ids.append(expected)


def test_gpt2_passed_as_diffusion_model_is_refused(tiny_gpt2_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match="not a masked LM"):
        compare_models.main(_argv(tiny_gpt2_checkpoint, tiny_gpt2_checkpoint, tmp_path / "c.gif"))
    assert not (tmp_path / "c.gif").exists()


def test_masked_lm_passed_as_gpt2_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match="not an autoregressive"):
        compare_models.main(_argv(tiny_checkpoint, tiny_checkpoint, tmp_path / "c.gif"))


def test_output_inside_a_file_is_refused(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="is a file"):
        compare_models.main(_argv(tiny_checkpoint, tiny_gpt2_checkpoint, blocker / "c.gif"))
    with pytest.raises(SettingsError, match="is a directory"):
        compare_models.main(_argv(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path))


def test_missing_gpt2_checkpoint_is_named_and_exits_2(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-gpt2"
    monkeypatch.setattr(sys, "argv", ["compare_models.py", *_argv(tiny_checkpoint, str(missing), tmp_path / "c.gif")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "compare_models.py"), run_name="__main__")  # the script's own __main__ block
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpt2-checkpoint") and str(missing) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.gif").exists()


def test_missing_roberta_checkpoint_is_named(tiny_gpt2_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match="no-roberta"):
        compare_models.main(_argv(str(tmp_path / "no-roberta"), tiny_gpt2_checkpoint, tmp_path / "c.gif"))


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare_models.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--gpt2-checkpoint" in out and "--roberta-checkpoint" in out and "--clock" in out and "comparison.gif" in out


def test_block_wise_diffusion_panel_marks_its_active_block_and_the_gpt2_panel_none(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path):
    argv = _argv(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path / "c.gif", "--block-size", "4", "--clock", "nfe")
    args, cmp = compare_models.parse_args(argv)
    checkpoint, (ar, ar_tok) = compare_models.load_models(args, cmp)
    runs = [compare_models.run_diffusion(args, checkpoint), compare_models.run_autoregressive(args, ar, ar_tok, "gpt2")]
    assert runs[0].states[0].active is None and all(s.active is not None for s in runs[0].states[1:])
    assert all(s.active is None for s in runs[1].states)
    frames, _ = compare_models.render_comparison(runs, "nfe")

    def outline(frame, box):
        return sum(px == rendering.ACTIVE_OUTLINE for px in frame.crop(box).getdata())

    # Step 0 has no block: its only marking colour is the legend's swatch. Step 1 adds the band, left panel only.
    left, right = (0, 0, compare_models.PANEL_WIDTH, frames[0].height), (compare_models.PANEL_WIDTH, 0, *frames[0].size)
    assert outline(frames[0], left) + outline(frames[0], right) > 0
    assert outline(frames[1], left) > outline(frames[0], left) and outline(frames[1], right) == outline(frames[0], right)


def _ending_early(checkpoint: str, directory: Path, bias: float) -> str:
    """A copy of `checkpoint` whose LM head favours the end token by `bias` nats, so its rows end early."""
    model, tokenizer = models.load_masked_lm(checkpoint)
    with torch.no_grad():
        model.get_output_embeddings().bias[tokenization.end_token_id(tokenizer)] += bias
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    models.DiffusionConfig.load(checkpoint).save(directory)
    return str(directory)


def test_a_diffusion_row_that_ends_early_counts_only_its_text_tokens(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, capsys):
    early = _ending_early(tiny_checkpoint, tmp_path / "early", bias=2.0)
    # Random order: the end token is revealed wherever it is drawn (no end-after-text rule), here at position 12.
    argv = _argv(early, tiny_gpt2_checkpoint, tmp_path / "c.gif", "--steps", "18", "--strategy", "random")
    diffusion = compare_models.main(argv)[0]
    table = capsys.readouterr().out
    # The same run again (same seed), to read its last state: the prompt fixed, then the text up to the first end
    # token, then what the row holds after it (not text: the document ended).
    args, cmp = compare_models.parse_args(argv)
    run = compare_models.run_diffusion(args, compare_models.load_models(args, cmp)[0])
    assert run.text == diffusion["text"]
    end = tokenization.end_token_id(tokenization.load_tokenizer(early))
    final = run.states[-1]
    generated = [i for i, label in zip(final.ids, final.labels) if label != rendering.FIXED]
    assert end in generated and generated.index(end) < len(generated) - 1  # it ended early
    assert diffusion["text_tokens"] == generated.index(end) > 0
    assert diffusion["tokens_per_second"] == pytest.approx(diffusion["text_tokens"] / diffusion["seconds"], rel=0.01)  # seconds rounded
    line = next(line for line in table.splitlines() if line.startswith("diffusion"))
    assert line.split()[3] == str(diffusion["text_tokens"])


def test_text_tokens_stop_before_the_first_end_token(story_tokenizer):
    end = tokenization.end_token_id(story_tokenizer)
    assert prompts.text_token_count(story_tokenizer, [50, 51, 52, end]) == 3  # GPT-2: the end token stopped it
    assert prompts.text_token_count(story_tokenizer, [50, 51, 52]) == 3  # ran out of room
    assert prompts.text_token_count(story_tokenizer, [50, end, end, end]) == 1  # a diffusion row filled with end tokens
    assert prompts.text_token_count(story_tokenizer, [50, end, 51], stop_at_end=False) == 3
    ids = torch.tensor([[0, 7, 8, 50, 51, end, end, end], [0, 7, 8, 50, 51, 52, 53, 54]])
    fixed = torch.tensor([[True] * 3 + [False] * 5] * 2)
    assert prompts.generated_text_tokens(story_tokenizer, ids, fixed) == [2, 5]
