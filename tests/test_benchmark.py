"""experiments/benchmark.py: the data split, per-dataset settings, a whole (tiny, two-step) run, reuse of its
checkpoints, bad input."""

import json
import math
import runpy
import sys
import threading
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from experiments import benchmark
from experiments.helpers import real_corpora
from textdiffusion.data import corpus

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir(tmp_path):
    """A stand-in for ../shared/data: tinyshakespeare/input.txt made of built-in stories, warandpeace/input.txt
    of stories with characters that take two or three bytes."""
    for folder, text in (("tinyshakespeare", "\n".join(corpus.generate_corpus(400, seed=3))),
                         ("warandpeace", "\n".join(corpus.generate_corpus(200, seed=4)).replace("the ", "thé — "))):
        (tmp_path / "data" / folder).mkdir(parents=True)
        (tmp_path / "data" / folder / "input.txt").write_text(text + "\n", encoding="utf-8")
    return tmp_path / "data"


def test_shakespeare_split_is_the_first_90_and_the_last_10_percent(data_dir, tmp_path):
    train, test = real_corpora.split_files("shakespeare", str(data_dir), tmp_path / "out")
    source = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert train.read_text() + test.read_text() == source
    assert len(test.read_text()) == len(source) - len(source) * 90 // 100


def test_a_character_corpus_holds_out_the_last_10_percent_of_its_characters(data_dir, tmp_path):
    train, test = real_corpora.split_files("warandpeace-char", str(data_dir), tmp_path / "out")
    source = (data_dir / "warandpeace" / "input.txt").read_text(encoding="utf-8")
    assert len(source.encode("utf-8")) > len(source)  # so a cut by bytes would land elsewhere
    assert train.read_text(encoding="utf-8") + test.read_text(encoding="utf-8") == source
    assert len(train.read_text(encoding="utf-8")) == len(source) * 90 // 100


def test_each_dataset_sets_its_blocks_batch_steps_warmup_and_tokenizer_and_flags_given_win():
    bpe, char = benchmark.BenchmarkArguments(), benchmark.BenchmarkArguments(dataset="shakespeare-char")
    assert (bpe.tokenizer_type, bpe.max_length, bpe.batch_size, bpe.max_steps, bpe.warmup_steps) == ("bpe", 128, 32, 1000, 30)
    # nanoGPT's CPU configuration of train_shakespeare_char
    assert (char.tokenizer_type, char.max_length, char.batch_size, char.max_steps, char.warmup_steps) == ("char", 64, 12, 2000, 100)
    (given,) = HfArgumentParser(benchmark.BenchmarkArguments).parse_args_into_dataclasses(
        args=["--dataset", "warandpeace-char", "--max-steps", "5000", "--batch-size", "8"])
    assert (given.tokenizer_type, given.max_length, given.batch_size, given.max_steps) == ("char", 64, 8, 5000)
    for name in real_corpora.DATASETS:  # every corpus sets every one of them
        args = benchmark.BenchmarkArguments(dataset=name)
        assert None not in (args.tokenizer_type, args.max_length, args.batch_size, args.max_steps, args.warmup_steps)


def test_train_py_gets_the_datasets_tokenizer_and_gpt2_folders_differ_by_tokenizer(monkeypatch, tmp_path):
    commands = []
    monkeypatch.setattr(benchmark.subprocess, "call", lambda command, **kwargs: commands.append(command) or 0)
    args = benchmark.BenchmarkArguments(dataset="shakespeare-char", output_root=str(tmp_path), max_length=32)
    benchmark.train(args, "ar", tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / "ar")
    (command,) = commands
    given = [command[command.index(flag) + 1] for flag in ("--tokenizer-type", "--max-length", "--batch-size", "--warmup-steps")]
    assert given == ["char", "32", "12", "100"]
    bpe = benchmark.BenchmarkArguments(dataset="shakespeare-char", output_root=str(tmp_path), max_length=32, tokenizer_type="bpe")
    assert benchmark.ar_directory(args) != benchmark.ar_directory(bpe)


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_training_runs_the_two_trainings_at_the_same_time(data_dir, tmp_path, monkeypatch, parallel):
    both_running, started = threading.Barrier(2, timeout=2), []

    def call(command, **kwargs):  # returns only once the other training has started too
        started.append(command[command.index("--objective") + 1])
        both_running.wait()
        return 0

    monkeypatch.setattr(benchmark.subprocess, "call", call)
    argv = ["--data-dir", str(data_dir), "--output-root", str(tmp_path / "runs"), "--train-only"]
    if parallel:
        assert set(benchmark.main([*argv, "--parallel-training"])["train_seconds"]) == {"diffusion", "ar"}
        assert sorted(started) == ["ar", "diffusion"]
    else:  # one after the other: the first training waits alone and fails
        with pytest.raises(threading.BrokenBarrierError):
            benchmark.main(argv)
        assert started == ["diffusion"]
    assert not list((tmp_path / "runs").rglob("training.lock"))  # both locks released


@pytest.mark.slow
def test_a_tiny_run_reports_both_models_on_the_same_tokens_and_reuses_its_checkpoints(data_dir, tmp_path, capsys):
    argv = ["--data-dir", str(data_dir), "--output-root", str(tmp_path / "runs"), "--max-steps", "2", "--max-length", "32",
            "--vocab-size", "300", "--batch-size", "4", "--warmup-steps", "0", "--num-samples", "2",
            "--latency-repeats", "1", "--num-t-samples", "1", "--threads", "1"]
    result = benchmark.main(argv)
    out = tmp_path / "runs" / "shakespeare" / "default"
    assert (out / "diffusion" / "final-model" / "model.safetensors").is_file()
    (ar_run,) = out.parent.glob("ar-bpe-tiny-L32-v300-b4-s2-*")  # GPT-2's folder, named by its settings
    assert (ar_run / "final-model" / "model.safetensors").is_file()
    assert json.loads((out / "diffusion" / "final-model" / "config.json").read_text())["model_type"] == "modernbert"
    assert result["same_tokens"] is True
    models = [row["model"] for row in result["rows"]]
    assert models == ["diffusion, threshold 0.9", "diffusion, adaptive, 8 steps", "GPT-2, KV cache", "held-out text"]
    threshold, fixed, ar, _ = result["rows"]
    assert threshold["ppl"] == fixed["ppl"] > 1 and ar["ppl"] > 1
    assert fixed["batch1_passes"] == 8 and fixed["batch2_passes"] == 8  # L/4 steps
    assert 1 <= threshold["batch1_passes"] <= 31  # a cap of one pass per generated position
    assert 1 <= ar["batch1_passes"] <= 31  # one pass per token after the start token, up to an end token
    assert all(len(row["samples"]) == 2 for row in (threshold, fixed, ar))
    summary = result["summary"]
    assert summary["bound_over_ar_ppl"] == pytest.approx(threshold["ppl"] / ar["ppl"])
    assert summary["fixed_steps_latency_speedup_vs_ar"] == pytest.approx(ar["batch1_seconds"] / fixed["batch1_seconds"])
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["rows"][0]["ppl"] == pytest.approx(threshold["ppl"])
    assert (out / "benchmark.csv").read_text().splitlines()[0].startswith("model,ppl,")
    assert "| diffusion, threshold 0.9 |" in capsys.readouterr().out

    again = benchmark.main([*argv, "--guide-weights", "0.5"])  # the checkpoints exist: nothing is trained, the same bound
    assert all(math.isnan(s) for s in again["train_seconds"].values())
    assert again["rows"][0]["ppl"] == pytest.approx(threshold["ppl"])
    guided = again["rows"][3]  # AR-guided diffusion, after the GPT-2 row
    assert guided["model"] == "diffusion, threshold 0.9, guided by GPT-2 (0.5)" and len(guided["samples"]) == 2
    assert again["summary"]["guided_0.5_entropy_ratio"] == pytest.approx(guided["entropy"] / again["rows"][2]["entropy"])


def test_a_missing_data_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["benchmark", "--data-dir", str(tmp_path / "nowhere"), "--output-root", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("experiments.benchmark", run_name="__main__")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().count("\n") == 0 and "nowhere" in err


def test_a_folder_another_run_is_training_is_left_alone(tmp_path):
    args = benchmark.BenchmarkArguments(output_root=str(tmp_path))
    folder = benchmark.ar_directory(args)
    folder.mkdir(parents=True)
    (folder / "training.lock").touch()
    with pytest.raises(benchmark.UsageError, match="another run is training"):
        benchmark.train(args, "ar", tmp_path / "train.txt", tmp_path / "test.txt", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["training.lock"]  # nothing started, nothing removed


def test_a_run_folder_is_only_reused_with_the_settings_it_was_trained_with(tmp_path):
    args = benchmark.BenchmarkArguments(output_root=str(tmp_path), learning_rate=1e-3)
    out = tmp_path / "shakespeare" / "default"
    benchmark.check_recipe(args, out)
    assert json.loads((out / "recipe.json").read_text())["learning_rate"] == 1e-3
    benchmark.check_recipe(args, out)  # the same settings: fine
    other = benchmark.BenchmarkArguments(output_root=str(tmp_path), learning_rate=3e-3)
    with pytest.raises(benchmark.UsageError, match="--learning-rate 0.001 there, 0.003 here"):
        benchmark.check_recipe(other, out)
    other.retrain = True  # retraining replaces the run, so its settings become the folder's
    benchmark.check_recipe(other, out)
    assert json.loads((out / "recipe.json").read_text())["learning_rate"] == 3e-3


def test_ar_steps_train_gpt2_shorter_in_its_own_folder_and_leave_the_diffusion_model_alone(monkeypatch, tmp_path):
    commands = []
    monkeypatch.setattr(benchmark.subprocess, "call", lambda command, **kwargs: commands.append(command) or 0)
    args = benchmark.BenchmarkArguments(dataset="shakespeare", output_root=str(tmp_path), max_steps=50, ar_steps=20)
    for objective in ("diffusion", "ar"):
        benchmark.train(args, objective, tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / objective)
    steps = [command[command.index("--max-steps") + 1] for command in commands]
    assert steps == ["50", "20"]
    short = benchmark.BenchmarkArguments(dataset="shakespeare", output_root=str(tmp_path), max_steps=20)
    assert benchmark.ar_directory(args) == benchmark.ar_directory(short)  # the 20-step cell's GPT-2 is reused
    with pytest.raises(benchmark.UsageError, match="--ar-steps 0 must be at least 1"):
        benchmark.main(["--dataset", "shakespeare", "--ar-steps", "0", "--output-root", str(tmp_path)])
