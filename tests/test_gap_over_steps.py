"""experiments/gap_over_steps.py: one benchmark cell per (dataset, steps), the table built from them, reuse, bad input."""

import csv
import json
import math
import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

from experiments import benchmark, gap_over_steps
from textdiffusion.data import corpus, tokenization
from textdiffusion.errors import SettingsError

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--max-length", "16", "--batch-size", "4", "--warmup-steps", "0", "--num-t-samples", "1", "--threads", "1"]


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data" / "tinyshakespeare"
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text("\n".join(corpus.generate_corpus(300, seed=5)) + "\n", encoding="utf-8")
    return tmp_path / "data"


@pytest.fixture
def benchmark_runs(monkeypatch):
    """Run each cell's benchmark in this process with tiny blocks and batches; record the cells' flags."""
    calls = []

    def run(argv, log_path, threads):
        calls.append(argv)
        benchmark.main(argv + TINY)
        return 0

    monkeypatch.setattr(gap_over_steps.training_runs, "run_benchmark", run)
    return calls


@pytest.mark.slow
def test_the_table_has_one_row_per_dataset_and_steps_with_the_ratio_of_the_two_perplexities(data_dir, tmp_path, benchmark_runs, capsys):
    out = tmp_path / "gap"
    argv = ["--datasets", "shakespeare-char", "--steps", "2,1", "--data-dir", str(data_dir), "--output-dir", str(out),
            "--num-samples", "2"]
    rows = gap_over_steps.main(argv)
    assert [(row["dataset"], row["steps"]) for row in rows] == [("shakespeare-char", 1), ("shakespeare-char", 2)]
    assert [call[call.index("--max-steps") + 1] for call in benchmark_runs] == ["1", "2"]  # a training per length
    with open(out / "gap_over_steps.csv") as f:
        saved = list(csv.DictReader(f))
    assert len(saved) == 2
    for row in saved:
        value = {key: float(row[key]) for key in ("bound_ppl", "ar_ppl", "ratio_ppl", "bound_bits", "ar_bits", "ratio_bits", "ar_nats")}
        assert row["unit"] == "char"
        assert value["ratio_ppl"] == pytest.approx(value["bound_ppl"] / value["ar_ppl"])
        assert value["ar_bits"] == pytest.approx(value["ar_nats"] / math.log(2))  # bits per char = nats / ln 2
        assert value["bound_bits"] == pytest.approx(math.log2(value["bound_ppl"]))
        assert value["ratio_bits"] == pytest.approx(value["bound_bits"] / value["ar_bits"])
        assert float(row["held_out_judge_ppl"]) > 1 and float(row["diffusion_entropy"]) > 0
    # against the corpus's best GPT-2 (lowest held-out perplexity of any length), which also judges every cell
    best = min(saved, key=lambda row: float(row["ar_ppl"]))
    for row in saved:
        assert row["best_ar_steps"] == best["steps"] and float(row["best_ar_ppl"]) == pytest.approx(float(best["ar_ppl"]))
        assert float(row["ratio_to_best_ar_ppl"]) == pytest.approx(float(row["bound_ppl"]) / float(best["ar_ppl"]))
        assert float(row["ratio_to_best_ar_ppl"]) >= float(row["ratio_ppl"]) - 1e-9
        assert float(row["ratio_to_best_ar_bits"]) == pytest.approx(float(row["bound_bits"]) / float(best["ar_bits"]))
        assert float(row["held_out_judge_ppl_best_ar"]) == pytest.approx(float(best["held_out_judge_ppl"]), rel=1e-4)
    for key in ("diffusion", "fixed", "ar", "held_out"):  # the best cell's own judge is the best GPT-2: the same figures
        assert float(best[f"{key}_judge_ppl_best_ar"]) == pytest.approx(float(best[f"{key}_judge_ppl"]), rel=1e-4)
    cell = out / "shakespeare-char" / "1-steps"
    tokenizer = tokenization.load_tokenizer(str(cell / "diffusion" / "final-model"))
    assert all(len(token) == 1 for token in tokenizer.get_vocab() if token not in tokenization.SPECIAL_TOKENS)  # characters
    held_out = (cell / "data" / "test.txt").read_text(encoding="utf-8").strip()
    block = 16 - 1  # a block is <s> and 15 characters; the text is cut into whole blocks
    assert json.loads((cell / "benchmark.json").read_text())["bound_tokens"] == (len(held_out) + 1) // block * block
    assert Image.open(out / "gap_over_steps.png").size == (1210, 440)
    assert "| shakespeare-char | 1 | 1 | char |" in capsys.readouterr().out  # GPT-2 trained as long as the cell

    again = gap_over_steps.main(argv)  # every cell was measured with these settings: read back, nothing run
    assert len(benchmark_runs) == 2
    assert [row["ratio_ppl"] for row in again] == [row["ratio_ppl"] for row in rows]

    more = gap_over_steps.main(argv[:-1] + ["3"])  # other sample settings: measured again, the checkpoints reused
    assert len(benchmark_runs) == 4
    assert all(math.isnan(row["diffusion_train_s"]) and math.isnan(row["ar_train_s"]) for row in more)
    assert [row["bound_ppl"] for row in more] == pytest.approx([row["bound_ppl"] for row in rows])

    one = [*argv[:3], "1", *argv[4:-1], "3"]  # one length asked for: the other cell measured with these settings stays
    assert [row["steps"] for row in gap_over_steps.main(one)] == [1, 2] and len(benchmark_runs) == 4
    with open(out / "gap_over_steps.csv") as f:
        assert [row["steps"] for row in csv.DictReader(f)] == ["1", "2"]
    assert [row["steps"] for row in gap_over_steps.main(one[:-1] + ["2"])] == [1]  # cell 2 holds 3 samples: left out


def test_the_nanogpt_reference_stands_next_to_the_matching_cell_only():
    result = {
        "arguments": {"tokenizer_type": "char"},
        "rows": [{"ppl": 7.0, "nats_per_token": math.log(7.0), "gen_ppl": 5.0, "entropy": 3.0},
                 {"model": "diffusion, adaptive, 16 steps", "gen_ppl": 9.0, "entropy": 3.3},
                 {"ppl": 6.0, "nats_per_token": math.log(6.0), "gen_ppl": 4.0, "entropy": 3.1},
                 {"gen_ppl": 4.5, "entropy": 3.2}],
        "summary": {"bound_over_ar_ppl": 7 / 6, "bound_over_ar_nats": math.log(7) / math.log(6)},
        "train_seconds": {"diffusion": 10.0, "ar": 8.0},
    }
    row = gap_over_steps.gap_row("shakespeare-char", 2000, result)
    assert row["reference_ar_nats"] == 1.88 and row["ar_steps"] == 2000  # GPT-2 trained as long as the cell
    assert (row["fixed_sampler"], row["fixed_judge_ppl"], row["fixed_entropy"]) == ("diffusion, adaptive, 16 steps", 9.0, 3.3)
    assert gap_over_steps.gap_row("shakespeare-char", 1000, result)["reference_ar_nats"] is None
    assert gap_over_steps.gap_row("warandpeace-char", 2000, result)["reference_ar_nats"] is None


def test_a_failed_cell_stops_the_command_with_the_benchmarks_own_error(data_dir, tmp_path, monkeypatch):
    def fail(argv, log_path, threads):
        log_path.write_text("INFO starting\nerror: another run is training that folder\n")
        return 2

    monkeypatch.setattr(gap_over_steps.training_runs, "run_benchmark", fail)
    with pytest.raises(SettingsError, match="shakespeare-char at 1000 steps failed .*another run is training"):
        gap_over_steps.main(["--datasets", "shakespeare-char", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "gap")])
    assert not (tmp_path / "gap" / "gap_over_steps.csv").exists()


@pytest.mark.parametrize("flags, message", [
    (["--datasets", "shakespeare,tolstoy"], "'tolstoy' is not one of"),
    (["--steps", "1000,-5"], "--steps 1000,-5"),
    (["--num-samples", "0"], "--num-samples 0"),
])
def test_bad_input_is_refused_before_anything_runs(data_dir, tmp_path, flags, message):
    with pytest.raises(SettingsError, match=message):
        gap_over_steps.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "gap"), *flags])
    assert not (tmp_path / "gap").exists()


def test_a_missing_corpus_is_one_line_and_exit_2_and_help_exits_0(tmp_path, monkeypatch, capsys):
    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["gap_over_steps", *argv])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("experiments.gap_over_steps", run_name="__main__")
        return exit_info.value.code, capsys.readouterr().err

    code, err = run("--datasets", "warandpeace-char", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "gap"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "warandpeace/input.txt not found" in err
    assert run("--help")[0] == 0


def test_ar_max_steps_shortens_gpt2_only_in_the_longer_cells():
    args = gap_over_steps.GapArguments(ar_max_steps=2000)
    assert "--ar-steps" not in gap_over_steps.benchmark_argv(args, "shakespeare", 2000)
    argv = gap_over_steps.benchmark_argv(args, "shakespeare", 5000)
    assert argv[argv.index("--ar-steps") + 1] == "2000"
    saved = {"arguments": {"dataset": "shakespeare", "max_steps": 5000, "num_samples": 64, "seed": 0, "ar_steps": None}}
    assert not gap_over_steps.measured_with_these_settings(args, "shakespeare", 5000, saved)  # GPT-2 of 5000 steps there
    assert gap_over_steps.measured_with_these_settings(gap_over_steps.GapArguments(), "shakespeare", 5000, saved)
