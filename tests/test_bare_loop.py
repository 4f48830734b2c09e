"""experiments/bare_loop.py: the plain PyTorch loop train.py is measured against trains exactly as train.py does."""

import json

import pytest

import train
from experiments import bare_loop
from textdiffusion import cli, training

TINY = ["--from-scratch", "--dataset-name", "builtin", "--max-train-samples", "200", "--max-eval-samples", "40",
        "--max-length", "48", "--line-by-line", "--vocab-size", "300", "--batch-size", "8", "--disable-tqdm", "true"]


@pytest.mark.parametrize("extra", [["--repeat-mask-steps", "2"], ["--block-size", "8"]])
def test_the_bare_loop_gives_train_py_losses_step_for_step(tmp_path, extra):
    out = tmp_path / "run"
    train.main([*TINY, *extra, "--max-steps", "4", "--logging-steps", "1", "--eval-strategy", "no", "--save-strategy", "no",
                "--output-dir", str(out)])
    logged = [entry["loss"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    model, trainer, args = bare_loop.rebuild(out)
    times, losses = bare_loop.bare_loop(model, trainer, args, 4)
    assert len(logged) == 4 and losses == pytest.approx(logged, abs=1e-6)  # same batches, masks, weights, optimiser
    assert len(times.stamps) == 4 and times.steady_seconds() > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_tokens_per_second"] == pytest.approx(8 * 48 / metrics["train_step_seconds"], rel=1e-3)


def test_step_times_are_the_median_interval_after_the_warm_up():
    times = training.StepTimes(skip=2)
    times.stamps = [0.0, 5.0, 5.5, 6.5, 7.0, 9.0, 9.5]  # intervals after step 2: 1.0, 0.5, 2.0, 0.5
    assert times.steady_seconds() == 0.75
    short = training.StepTimes(skip=5)
    short.stamps = [0.0, 1.0, 3.0]
    assert short.steady_seconds() == 1.5  # a short run keeps its last two intervals
    assert training.StepTimes().steady_seconds() is None


@pytest.mark.parametrize("flags, message", [
    (["--settings", "huge"], "--settings huge is unknown; choose any of quick-test, shakespeare-bpe, blocks"),
    (["--steps", "7"], "--steps 7 must be 8 or more (the first 5 are not timed)"),
    (["--repeats", "0"], "--repeats 0 must be 1 or more"),
])
def test_bare_loop_bad_flags_are_one_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(bare_loop.main, [*flags, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()
