"""experiments/block_diffusion.py: one benchmark cell per (block size, seed), the table over seeds, bad input."""

import csv

import pytest

from experiments import benchmark, block_diffusion
from textdiffusion.data import corpus
from textdiffusion.errors import SettingsError

TINY = ["--batch-size", "4", "--max-steps", "2", "--warmup-steps", "0", "--num-t-samples", "1", "--num-samples", "2",
        "--latency-repeats", "1", "--threads", "1"]


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data" / "tinyshakespeare"
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text("\n".join(corpus.generate_corpus(200, seed=5)) + "\n", encoding="utf-8")
    return tmp_path / "data"


@pytest.mark.slow
def test_one_cell_per_block_size_and_seed_and_the_table_over_seeds(data_dir, tmp_path, monkeypatch, capsys):
    calls = []

    def run(argv, log_path, threads):
        calls.append(argv)
        benchmark.main(argv + TINY)
        return 0

    monkeypatch.setattr(block_diffusion.training_runs, "run_benchmark", run)
    out = tmp_path / "blocks"
    argv = ["--max-length", "16", "--block-sizes", "8", "4", "--seeds", "0", "--fixed-steps", "4", "8", "--data-dir", str(data_dir),
            "--output-root", str(tmp_path / "runs"), "--output-dir", str(out)]
    rows = block_diffusion.main(argv)
    sizes = [call[call.index("--block-size") + 1] if "--block-size" in call else None for call in calls]
    assert sizes == ["4", "8", None]  # smallest first, then the full-sequence model
    samplers = ["threshold", "confidence, 4 steps", "confidence, 8 steps"]
    assert [(row["block_size"], row["sampler"]) for row in rows] == [(size, s) for size in (4, 8, 16) for s in samplers]
    # n denoising passes over 15 generated tokens whatever the blocks (a block's first pass carries the one before
    # it into the cache)
    for steps in (4, 8):
        passes = {row["block_size"]: row["passes_per_token"] for row in rows if row["sampler"] == f"confidence, {steps} steps"}
        assert passes == {4: pytest.approx(steps / 15), 8: pytest.approx(steps / 15), 16: pytest.approx(steps / 15)}
    assert all(row["bound_over_ar"] > 0 and row["speedup_vs_ar"] > 0 for row in rows)
    with open(out / "block_diffusion.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    assert (out / "block_diffusion.png").is_file()
    table = capsys.readouterr().out
    assert "| full | threshold | 1 |" in table and "| 4 | confidence, 8 steps | 1 |" in table

    again = block_diffusion.main(argv)  # every cell measured: read back, nothing run
    assert len(calls) == 3 and [row["bound_over_ar"] for row in again] == [row["bound_over_ar"] for row in rows]


@pytest.mark.parametrize("flags, message", [
    (["--block-sizes", "5"], "--block-sizes 5"),
    (["--block-sizes", "128"], "--block-sizes 128"),
    (["--seeds", "-1"], "--seeds"),
])
def test_bad_input_is_refused_before_anything_runs(data_dir, tmp_path, flags, message):
    with pytest.raises(SettingsError, match=message):
        block_diffusion.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"),
                              "--output-root", str(tmp_path / "runs"), *flags])
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
