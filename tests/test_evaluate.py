"""evaluate.py and evaluation.report: bound vs exact perplexity, sample metrics, bad input."""

import json

import pytest

import evaluate
from textdiffusion import cli
from textdiffusion.metrics import text_metrics


def test_evaluate_reports_bound_exact_perplexity_and_sample_metrics(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, capsys):
    table = evaluate.main([
        "--checkpoint", tiny_checkpoint, "--ar-checkpoint", tiny_gpt2_checkpoint, "--judge", tiny_gpt2_checkpoint,
        "--max-eval-samples", "16", "--num-t-samples", "2", "--num-samples", "4", "--steps", "4",
        "--output-dir", str(tmp_path / "eval"),
    ])
    rows = {row["model"]: row for row in table}
    assert set(rows) == {"diffusion", "autoregressive", "reference text"}
    assert rows["diffusion"]["same_tokens"] and not rows["diffusion"]["exact"] and rows["autoregressive"]["exact"]
    # Same blocks, same tokens: the document tokens, each line-by-line row's filler end tokens not counted.
    assert rows["diffusion"]["tokens"] == rows["autoregressive"]["tokens"] < 16 * 31
    assert rows["diffusion"]["nats_per_token_stderr"] > 0 and "nats_per_token_stderr" not in rows["autoregressive"]
    assert rows["diffusion"]["forward_passes"] == 4 and len(rows["diffusion"]["samples"]) == 4
    assert {"gen_ppl", "entropy", "distinct_2", "valid_rate"} <= set(rows["autoregressive"])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [row["model"] for row in saved["rows"]] == ["diffusion", "autoregressive", "reference text"]
    out = capsys.readouterr().out
    assert "ppl (bound)" in out and "+- s.e." in out
    # The valid share with its 95% Wilson interval, and a line saying what they are and of how many samples.
    low, high = text_metrics.valid_interval(round(rows["diffusion"]["valid_rate"] * 4), 4)
    assert (rows["diffusion"]["valid_low"], rows["diffusion"]["valid_high"]) == (low, high)
    line = next(line for line in out.splitlines() if line.startswith("diffusion"))
    assert f"{rows['diffusion']['valid_rate']:.3f} [{low:.2f}, {high:.2f}]" in line
    assert "valid: the share of valid stories among 4 samples, [its 95% Wilson interval]." in out


def test_evaluate_draws_256_samples_by_default():
    assert evaluate.parse_args([])[1].num_samples == 256


def test_evaluate_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--help"])
    assert exit_info.value.code == 0
    assert "--num-t-samples" in capsys.readouterr().out


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, argv + ["--num-samples", "0", "--judge", "none"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # transformers may print a loading bar first
    assert err.startswith("error: ")
    return err


def test_evaluation_file_without_text_is_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert "contains no text" in _usage_error(["--checkpoint", tiny_checkpoint, "--validation-file", str(empty)], capsys)


def test_causal_lm_as_the_diffusion_checkpoint_is_a_usage_error(tiny_gpt2_checkpoint, capsys):
    assert "not a masked LM" in _usage_error(["--checkpoint", tiny_gpt2_checkpoint], capsys)


def test_masked_lm_as_the_ar_checkpoint_is_a_usage_error(tiny_checkpoint, capsys):
    assert "not an autoregressive" in _usage_error(["--checkpoint", tiny_checkpoint, "--ar-checkpoint", tiny_checkpoint], capsys)


def test_text_shorter_than_one_block_is_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("tom found a ball .")
    argv = ["--checkpoint", tiny_checkpoint, "--validation-file", str(short), "--line-by-line", "false"]
    assert "fewer than one block" in _usage_error(argv, capsys)


# ----------------------------------------------------------------------------- experiments




def test_on_packed_text_the_reference_row_is_held_out_blocks_as_long_as_the_samples(tmp_path, tiny_checkpoint):
    """A whole document's word entropy grows with its length: the samples (max_length tokens) are compared with
    held-out blocks of the same length, not with whole documents."""
    from textdiffusion import models, sampling
    from textdiffusion.metrics import evaluation

    story = "tom found a red kite in the park and showed it to sam . "
    text = tmp_path / "held.txt"
    text.write_text("\n\n".join(" ".join(f"{story}{word}{i}" for i in range(30)) for word in ("one", "two")) + "\n")
    checkpoint = models.load_checkpoint(str(tiny_checkpoint))
    settings = sampling.GenerationSettings(max_length=16, num_samples=3, steps=4)
    table = evaluation.report(checkpoint, None, str(text), max_length=16, line_by_line=False, num_t_samples=1, settings=settings)
    blocks = evaluation.held_out_texts(checkpoint.tokenizer, text, 16, 3)
    assert table[-1]["model"] == "reference text" and len(blocks) == 3
    assert table[-1]["entropy"] == pytest.approx(text_metrics.mean_unigram_entropy(blocks))
    whole = text_metrics.mean_unigram_entropy(text.read_text().split("\n\n"))
    assert table[-1]["entropy"] < whole - 0.3
