import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForMaskedLM, AutoTokenizer

import train
from config import PRESETS, QUICK_TEST
from textdiffusion import cli, models, training
from textdiffusion.data import tokenization

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = [
    "--from-scratch", "--dataset-name", "builtin", "--max-train-samples", "200", "--max-eval-samples", "40",
    "--max-length", "48", "--line-by-line", "--vocab-size", "300", "--max-steps", "6", "--batch-size", "8",
    "--logging-steps", "2", "--eval-steps", "3", "--save-steps", "3", "--disable-tqdm", "true",
]


# ----------------------------------------------------------------------------- the loss


def test_quick_test_preset_really_applies():
    model_args, data_args, diff_args, _, training_args = train.parse_args(["--quick-test"])
    assert model_args.from_scratch and model_args.model_size == "tiny"
    assert data_args.dataset_name == "builtin" and data_args.line_by_line
    assert training_args.max_steps == int(QUICK_TEST["max_steps"])
    assert training_args.output_dir == "results"
    # The two settings without which the quick-test model never learned to copy (RESULTS.md).
    assert diff_args.repeat_mask_steps == 300 and not model_args.tie_word_embeddings
    model_args, *_ = train.parse_args(["--quick-test", "--tie-word-embeddings", "true"])
    assert model_args.tie_word_embeddings  # the user's flag wins


def test_user_flags_override_the_preset_and_seed_flags_work():
    _, data_args, _, _, training_args = train.parse_args(
        ["--quick-test", "--max-length", "64", "--epochs", "2", "--batch-size", "3", "--learning-rate", "0.01",
         "--output-dir", "x"]
    )
    assert data_args.max_length == 64
    assert training_args.per_device_train_batch_size == 3 and training_args.num_train_epochs == 2
    assert training_args.learning_rate == 0.01 and training_args.output_dir == "x"
    model_args, *_ = train.parse_args(["--model-name", "roberta-base"])
    assert model_args.model_name_or_path == "roberta-base"


def preset_value(name: str, flag: str) -> float:
    return float(PRESETS[name][flag.lstrip("-")])


@pytest.mark.parametrize(
    "argv, preset",
    [
        (["--from-scratch"], "from-scratch"),
        (["--from_scratch", "true"], "from-scratch"),
        (["--from-scratch=True", "--objective", "ar"], "from-scratch"),  # the AR baseline gets the same preset
        (["--quick-test"], "from-scratch"),
        (["--quick-test", "--objective", "ar"], "from-scratch"),
        ([], "fine-tuning"),
        (["--from-scratch", "false"], "fine-tuning"),
        (["--model-name-or-path", "roberta-base"], "fine-tuning"),
    ],
)
def test_the_preset_follows_how_the_model_starts(argv, preset):
    *_, training_args = train.parse_args(argv)
    assert training_args.learning_rate == preset_value(preset, "--learning_rate")
    # The quick-test keeps the warm-up its recipe was measured with.
    warmup = float(QUICK_TEST["warmup_steps"]) if "--quick-test" in argv else preset_value(preset, "--warmup_steps")
    assert training_args.warmup_steps == warmup
    assert training_args.lr_scheduler_type.value == PRESETS[preset]["lr_scheduler_type"]


def test_user_flags_beat_the_from_scratch_preset():
    *_, training_args = train.parse_args(["--from-scratch", "--learning-rate", "3e-4", "--lr-scheduler-type", "constant"])
    assert training_args.learning_rate == 3e-4 and training_args.lr_scheduler_type.value == "constant"
    assert training_args.warmup_steps == preset_value("from-scratch", "--warmup_steps")


def help_text(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_presets_differ_and_help_names_both(capsys):
    assert preset_value("from-scratch", "--learning_rate") > 10 * preset_value("fine-tuning", "--learning_rate")
    text = help_text(capsys)
    assert "from-scratch preset" in " ".join(text.split()) and "fine-tuning" in text


@pytest.mark.parametrize("argv", [["--objective", "ar"], ["--objective=ar"], ["--quick-test", "--objective=ar"],
                                  ["--objective", "ar", "--quick-test"], ["--from-scratch=true", "--objective=ar"]])
def test_ar_baseline_defaults_to_its_own_directory_in_every_spelling(argv):
    *_, training_args = train.parse_args(argv)
    assert training_args.output_dir == "results-ar"
    *_, training_args = train.parse_args([*argv, "--output-dir=mine"])
    assert training_args.output_dir == "mine"


def test_flags_mean_the_same_with_or_without_equals_and_in_their_seed_spellings():
    spaced = train.parse_args(["--quick-test", "--max-length", "64", "--epochs", "2", "--batch-size", "3", "--model-size", "small"])
    equals = train.parse_args(["--quick-test", "--max_length=64", "--epochs=2", "--batch_size=3", "--model-size=small"])
    assert spaced == equals
    assert spaced[-1].num_train_epochs == 2 and spaced[-1].per_device_train_batch_size == 3 and spaced[1].max_length == 64
    assert train.parse_args(["--model-name=roberta-base"])[0].model_name_or_path == "roberta-base"


@pytest.mark.parametrize("argv, resume", [(["--resume-from-checkpoint"], "last"), (["--resume-from-checkpoint", "--quick-test"], "last"),
                                          (["--resume-from-checkpoint", "run/checkpoint-3"], "run/checkpoint-3"),
                                          (["--resume_from_checkpoint=run/checkpoint-3"], "run/checkpoint-3"), ([], None)])
def test_a_bare_resume_from_checkpoint_means_the_newest_checkpoint(argv, resume):
    assert train.parse_args(argv)[-1].resume_from_checkpoint == resume


def test_help_exits_zero(capsys):
    text = help_text(capsys)
    assert "--mask-rates" in text and "--quick-test" in text and "--loss-weighting" in text


def test_help_shows_the_projects_options_and_the_usual_trainer_ones_in_under_200_lines(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # the narrowest usual terminal: the most lines
    text = help_text(capsys)
    assert len(text.splitlines()) < 200
    for flag in ("--learning-rate", "--per-device-train-batch-size", "--batch-size", "--max-steps", "--num-train-epochs",
                 "--epochs", "--warmup-steps", "--bf16", "--fp16", "--logging-steps", "--eval-strategy", "--eval-steps",
                 "--save-steps", "--save-total-limit", "--report-to", "--seed", "--gradient-accumulation-steps",
                 "--weight-decay", "--output-dir", "--resume-from-checkpoint", "--help-all"):
        assert flag in text, flag
    assert "--adam-beta1" not in text and "--adam_beta1" not in text
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help-all"])
    everything = capsys.readouterr().out
    assert exit_info.value.code == 0 and len(everything.splitlines()) > 2 * len(text.splitlines())
    assert "--adam-beta1" in everything and "--mask-rates" in everything
    # Hidden from --help, still parsed.
    assert train.parse_args(["--adam-beta1", "0.8", "--adam_beta2=0.95"])[-1].adam_beta2 == 0.95


# ----------------------------------------------------------------------------- the output directory


def earlier_run(directory: Path, quick_test: bool) -> Path:
    """A directory as train.py leaves it: run_args.json, a checkpoint, a final model; plus a file of the user's."""
    (directory / "checkpoint-400").mkdir(parents=True)
    (directory / "checkpoint-400" / "model.safetensors").write_text("weights")
    (directory / "final-model").mkdir()
    (directory / "run_args.json").write_text(json.dumps({"RunArguments": {"quick_test": quick_test, "overwrite_output_dir": False}}))
    (directory / "samples.jsonl").write_text("mine")
    return directory


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


@pytest.mark.parametrize("where, quick_test", [("foreign", True), ("foreign", False), ("results", False), ("results-ar", False)])
def test_the_quick_test_refuses_a_directory_holding_a_run_and_keeps_its_files(where, quick_test, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = earlier_run(tmp_path / where, quick_test)
    before = listing(out)
    argv = ["--quick-test"] + (["--output-dir", str(out)] if where == "foreign" else []) + (["--objective=ar"] if where == "results-ar" else [])
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0] == f"error: --output-dir {where if where != 'foreign' else out} is not empty; pass --overwrite-output-dir to replace it or --resume-from-checkpoint to continue it"
    assert listing(out) == before


@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_the_quick_test_replaces_an_earlier_quick_test_in_its_own_default_directory_and_says_so(objective, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    default = "results-ar" if objective == "ar" else "results"
    out = earlier_run(tmp_path / default, quick_test=True)
    args = train.parse_args(["--quick-test", f"--objective={objective}"])
    run_args, training_args = args[3], args[4]
    assert training_args.output_dir == default and run_args.overwrite_output_dir
    train.check_args(*args)
    with caplog.at_level("INFO", logger="train"):
        train.prepare_output_dir(run_args, training_args)
    said = [record.getMessage() for record in caplog.records if record.name == "train"]
    assert said == [f"replacing the earlier quick-test in {default}: checkpoint-400, final-model (at the end); other files stay"]
    assert listing(out) == ["final-model", "run_args.json", "samples.jsonl"]  # the final model is replaced by save_run
    # --overwrite-output-dir false still refuses it.
    with pytest.raises(cli.UsageError, match="is not empty"):
        train.check_args(*train.parse_args(["--quick-test", f"--objective={objective}", "--overwrite-output-dir", "false"]))


def test_an_explicit_overwrite_names_what_it_removes(tmp_path, caplog):
    out = earlier_run(tmp_path / "run", quick_test=False)
    (out / "checkpoint-1200").mkdir()
    *_, run_args, training_args = train.parse_args(["--from-scratch", "--output-dir", str(out), "--overwrite-output-dir"])
    with caplog.at_level("INFO", logger="train"):
        train.prepare_output_dir(run_args, training_args)
    said = [record.getMessage() for record in caplog.records if record.name == "train"]
    assert said == [f"replacing the earlier run in {out}: checkpoint-400, checkpoint-1200, final-model (at the end); other files stay"]
    assert listing(out) == ["final-model", "run_args.json", "samples.jsonl"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["--from-scratch", "--train-file", str(d / "missing.txt")], "not found"),
        (lambda d: ["--from-scratch", "--train-file", str(d / "empty.txt")], "contains no text"),
        (lambda d: ["--from-scratch", "--train-file", str(d / "latin1.txt")], "not UTF-8"),
        (lambda d: ["--dataset-name", "builtin", "--max-length", "4"], "at least 8"),
        (lambda d: ["--dataset-name", "builtin", "--max-length", "16", "--prefix-length", "16"], "--prefix-length 16"),
        (lambda d: ["--model-name-or-path", str(d / "gpt2")], "not a masked LM"),
        (lambda d: ["--model-name-or-path", str(d / "nomask")], "no mask token"),
        (lambda d: ["--model-name-or-path", str(d / "mlm"), "--dataset-name", "builtin", "--max-length", "512"], "larger than"),
        (lambda d: ["--model-name-or-path", "distilroberta-base", "--dataset-name", "builtin"], "--quick-test"),
        (lambda d: ["--quick-test", "--output-dir", str(d / "full")], "not empty"),
        (lambda d: ["--quick-test", "--objective=banana"], "--objective: invalid choice: 'banana' (choose from 'diffusion', 'ar')"),
        (lambda d: ["--quick-test", "--objective", "banana"], "--objective: invalid choice: 'banana'"),
        (lambda d: ["--quick-test", "--max-lenght", "8"], "unknown flag --max-lenght; did you mean --max-length?"),
        (lambda d: ["--quick-test", "--max-length=eight"], "--max-length: invalid int value: 'eight'"),
        (lambda d: ["--quick-test", "--load-best-model-at-end", "--save-strategy", "no"], "load_best_model_at_end"),
        (lambda d: ["--quick-test", "--output-dir", str(d / "empty.txt")], "is a file"),
        (lambda d: ["--quick-test", "--seed", "-1"], "--seed -1 must be 0 or more"),
        (lambda d: ["--quick-test", "--repeat-mask-share", "1.5"], "--repeat-mask-share 1.5 must be in [0, 1]"),
        (lambda d: ["--quick-test", "--repeat-mask-steps", "-3"], "--repeat-mask-steps -3 must be 0 or more"),
        (lambda d: ["--from-scratch", "--model-name-or-path", "roberta-base"], "drop one of the two"),
        (lambda d: ["--quick-test", "--model-name", "roberta-base"], "--from-scratch builds a new model"),
        (lambda d: ["--quick-test", "--report-to", "tensorboard,wandbb"], "--report-to wandbb is unknown; choose none, all or any of"),
    ],
)
def test_bad_input_gives_one_line_error(make_args, message, bad_inputs, tmp_path, capsys):
    args = make_args(bad_inputs)
    if "--output-dir" not in args:
        args += ["--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # above it, at most progress bars
    assert err.startswith("error:") and message in err, err
    assert (bad_inputs / "full" / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "out").exists()


def test_the_command_line_reports_bad_input_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train.py", "--train-file", str(tmp_path / "missing.txt"), "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")  # the script's own __main__ block
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines()[-1].startswith("error: --train-file not found")
    assert "Traceback" not in err


@pytest.mark.parametrize("flag, value, message", [
    ("--no-such-flag", "3", "unknown flag --no-such-flag (see --help)"),
    ("--tokenizer-type", "sentencepiece", "--tokenizer-type: invalid choice: 'sentencepiece' (choose from 'bpe', 'word', 'char')"),
    ("--mask-rates", "sometimes", "--mask-rates: invalid choice: 'sometimes'"),
    ("--loss-weighting", "magic", "--loss-weighting: invalid choice: 'magic'"),
    ("--architecture", "xlnet", "--architecture: invalid choice: 'xlnet'"),
    ("--from-scratch", "maybe", "--from-scratch: Truthy value expected: got maybe"),
])
def test_unknown_flags_and_choices_are_one_line_naming_them(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, [flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}"), err


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, story_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel



    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("  \n\n")
    (d / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("precious")
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=len(story_tokenizer), n_positions=32))
    gpt2.save_pretrained(d / "gpt2")
    story_tokenizer.save_pretrained(d / "gpt2")
    mlm = models.build_model("diffusion", "tiny", story_tokenizer, 32)
    mlm.save_pretrained(d / "mlm")
    story_tokenizer.save_pretrained(d / "mlm")
    mlm.save_pretrained(d / "nomask")
    nomask = tokenization.train_tokenizer(["a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3], "char", 100)
    nomask.mask_token = None
    nomask.save_pretrained(d / "nomask")
    (d / "nomask" / "tokenizer_config.json").write_text(
        json.dumps({**json.loads((d / "nomask" / "tokenizer_config.json").read_text()), "mask_token": None})
    )
    return d


# ----------------------------------------------------------------------------- a real (tiny) run


@pytest.mark.slow
def test_tiny_run_writes_a_loadable_model_with_its_diffusion_config(tmp_path):
    out = tmp_path / "run"
    metrics = train.main([*TINY_RUN, "--output-dir", str(out), "--mask-rates", "continuous", "--loss-weighting", "elbo",
                          "--prefix-length", "4", "--prefix-policy", "random"])
    final = out / "final-model"
    assert (final / "model.safetensors").is_file()
    model = AutoModelForMaskedLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert tokenizer.mask_token == "<mask>" and model.config.vocab_size >= len(tokenizer)
    settings = json.loads((final / "diffusion_config.json").read_text())
    assert settings == {
        "objective": "diffusion", "mask_rates": "continuous", "schedule": "linear", "loss_weighting": "elbo",
        "prefix_length": 4, "prefix_policy": "random", "line_by_line": True, "max_length": 48, "corpus": "builtin",
        "block_size": None,  # ordinary masked diffusion
        "version": 1,
    }
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["DiffusionArguments"]["loss_weighting"] == "elbo"
    assert (out / "loss_by_mask_level.png").stat().st_size > 1000
    assert "eval_elbo" in metrics and "eval_loss_mask_1.0" in metrics
    logged = [entry for entry in json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]]
    assert any(key.startswith("loss_mask_") for entry in logged for key in entry)
    assert not list(out.glob(".final-model*"))  # no temporary directory left behind


QUICK = ["--max-train-samples", "200", "--max-eval-samples", "40", "--vocab-size", "300", "--max-steps", "2", "--eval-steps", "2",
         "--save-steps", "2", "--logging-steps", "1", "--disable-tqdm", "true"]  # --quick-test, shortened


@pytest.mark.slow
def test_the_quick_test_gpt2_with_objective_equals_ar_writes_results_ar_and_leaves_results_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier = earlier_run(tmp_path / "results", quick_test=True)
    before = {path: path.read_bytes() for path in earlier.rglob("*") if path.is_file()}
    train.main(["--quick-test", "--objective=ar", *QUICK])
    assert (tmp_path / "results-ar" / "final-model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "results-ar" / "final-model" / "diffusion_config.json").read_text())["objective"] == "ar"
    assert {path: path.read_bytes() for path in earlier.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_a_second_quick_test_replaces_the_first_in_its_default_directory_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    train.main(["--quick-test", *QUICK])
    first = (tmp_path / "results" / "final-model" / "model.safetensors").read_bytes()
    (tmp_path / "results" / "visualization").mkdir()  # another script's output, which train.py leaves alone
    with caplog.at_level("INFO", logger="train"):
        train.main(["--quick-test", *QUICK, "--seed", "5"])
    said = [r.getMessage() for r in caplog.records if r.name == "train" and r.getMessage().startswith("replacing")]
    assert said == ["replacing the earlier quick-test in results: checkpoint-2, final-model (at the end); other files stay"]
    assert (tmp_path / "results" / "final-model" / "model.safetensors").read_bytes() != first
    assert (tmp_path / "results" / "visualization").is_dir()


@pytest.mark.slow
def test_evaluation_loss_is_identical_between_evaluations(tmp_path):
    out = tmp_path / "run"
    train.main([*TINY_RUN, "--output-dir", str(out), "--learning-rate", "0"])
    history = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    assert len(eval_losses) >= 2 and len(set(eval_losses)) == 1


@pytest.mark.slow
def test_rerun_with_overwrite_replaces_the_model(tmp_path):
    out = tmp_path / "run"
    train.main([*TINY_RUN, "--output-dir", str(out)])
    first = (out / "final-model" / "model.safetensors").read_bytes()
    train.main([*TINY_RUN, "--output-dir", str(out), "--overwrite-output-dir", "--seed", "5"])
    assert (out / "final-model" / "model.safetensors").read_bytes() != first


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes_to_the_same_final_step(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    args = [*TINY_RUN, "--max-steps", "60", "--save-steps", "1000", "--eval-steps", "1000", "--logging-steps", "1",
            "--output-dir", str(out)]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.time() + 240
    while "'loss'" not in seen and time.time() < deadline:  # wait until training is under way
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, (seen + rest)[-3000:]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and not (out / "final-model").exists()
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 0 < stopped_at < 60

    train.main([*args, "--resume-from-checkpoint"])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    assert (out / "final-model" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- reproducibility


def logged_losses(out: Path) -> list[float]:
    return [entry["loss"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_the_same_seed_gives_identical_losses_and_weights_and_another_seed_does_not(tmp_path):
    # dropout on, so its random draws are covered too
    run = [*TINY_RUN, "--dropout", "0.1", "--eval-steps", "100", "--save-steps", "100"]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        train.main([*run, "--seed", seed, "--output-dir", str(tmp_path / name)])
    a, b, c = (logged_losses(tmp_path / name) for name in "abc")
    assert len(a) == 3 and a == b
    assert a != c
    weights = [(tmp_path / name / "final-model" / "model.safetensors").read_bytes() for name in "abc"]
    assert weights[0] == weights[1] != weights[2]


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["log-linear", "geometric"])
def test_sedd_recipe_validates_every_epoch_and_logs_to_tensorboard_and_wandb_offline(schedule, tmp_path, monkeypatch):
    """The SEDD research seed's job at a tiny budget: WikiText-2, its two noise schedules, validation each epoch,
    TensorBoard and W&B (offline, no network) logging."""
    data = ROOT.parent / "shared" / "data" / "wikitext-2-raw"
    for name, lines in (("wiki.valid.raw", 120), ("wiki.test.raw", 30)):  # a slice: a text file is one packed document
        (tmp_path / name).write_text("\n".join((data / name).read_text().splitlines()[:lines]))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    out = tmp_path / "run"
    report = "tensorboard,wandb" if schedule == "geometric" else "tensorboard"  # wandb keeps its first run's folder per process
    train.main(["--from-scratch", "--model-size", "tiny", "--train-file", str(tmp_path / "wiki.valid.raw"), "--validation-file",
                str(tmp_path / "wiki.test.raw"), "--max-length", "32",
                "--vocab-size", "300", "--batch-size", "8", "--num-train-epochs", "2", "--eval-strategy", "epoch",
                "--save-strategy", "epoch", "--logging-steps", "2", "--schedule", schedule, "--report-to", report,
                "--disable-tqdm", "true", "--output-dir", str(out)])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    # one validation at the end of each epoch, then train.py's final evaluation (of the same, last model)
    assert [entry["epoch"] for entry in history if "eval_elbo" in entry] == [1.0, 2.0, 2.0]
    assert json.loads((out / "final-model" / "diffusion_config.json").read_text())["schedule"] == schedule
    assert list((out / "runs").glob("*/events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")) or report == "tensorboard"


@pytest.mark.slow
def test_character_seed_recipes_train_and_sample_at_a_tiny_budget(tmp_path):
    """char-diffusion (War and Peace, characters, a 96-character window) and TextDiffusion-Shakespeare (Tiny
    Shakespeare, pure diffusion and AR-guided diffusion) as RESULTS.md's seed section runs them, at 3 steps."""
    import generate

    data = ROOT.parent / "shared" / "data"
    texts = {"warandpeace": (data / "warandpeace" / "input.txt").read_text()[:20000],
             "shakespeare": (data / "tinyshakespeare" / "input.txt").read_text()[:20000]}
    outs = {}
    for name, text in texts.items():
        (tmp_path / f"{name}.txt").write_text(text)  # a slice: a text file is one packed document
        for objective in ("diffusion", "ar"):
            outs[name, objective] = out = tmp_path / f"{name}-{objective}"
            train.main(["--from-scratch", "--model-size", "tiny", "--train-file", str(tmp_path / f"{name}.txt"),
                        "--tokenizer-type", "char", "--max-length", "96", "--max-steps", "3", "--batch-size", "4",
                        "--eval-steps", "3", "--save-steps", "3", "--objective", objective, "--disable-tqdm", "true",
                        "--output-dir", str(out)])
    model = outs["warandpeace", "diffusion"] / "final-model"
    assert json.loads((model / "diffusion_config.json").read_text())["max_length"] == 96
    (sample,) = generate.main(["--checkpoint", str(model), "--max-length", "96", "--num-samples", "1", "--steps", "4"])
    assert 0 < len(sample) <= 95  # one character per generated position after the start token
    shakespeare = str(outs["shakespeare", "diffusion"] / "final-model")
    pure = generate.main(["--checkpoint", shakespeare, "--max-length", "96", "--num-samples", "2", "--steps", "4"])
    guided = generate.main(["--checkpoint", shakespeare, "--max-length", "96", "--num-samples", "2", "--steps", "4",
                            "--guide", str(outs["shakespeare", "ar"] / "final-model"), "--guide-weight", "0.5"])
    assert len(pure) == len(guided) == 2 and pure != guided


# ----------------------------------------------------------------------------- the model a run keeps


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_final_model_is_the_checkpoint_with_the_lowest_held_out_loss(tmp_path, objective):
    out = tmp_path / "run"
    # A learning rate this large makes the held-out loss move between evaluations, so "last" and "best" can differ.
    metrics = train.main([*TINY_RUN, "--output-dir", str(out), "--objective", objective, "--max-steps", "9",
                          "--learning-rate", "0.05", "--save-total-limit", "1"])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evaluated = {entry["step"]: entry["eval_loss"] for entry in history if "eval_loss" in entry and entry["step"] in (3, 6, 9)}
    best = min(evaluated, key=evaluated.get)
    assert metrics["best_step"] == best and metrics["eval_loss"] == pytest.approx(evaluated[best], abs=1e-4)
    kept = (out / f"checkpoint-{best}" / "model.safetensors").read_bytes()
    assert (out / "final-model" / "model.safetensors").read_bytes() == kept


def test_plateau_warning_fires_at_the_unigram_plateau_only():
    assert training.plateau_warning({"eval_loss_mask_0.1": 6.86, "eval_loss_mask_1.0": 6.35}).startswith(
        "the model ignores its context: held-out loss at mask rate 0.1 is 6.860, 1.08x")
    assert training.plateau_warning({"eval_loss_mask_0.1": 4.96, "eval_loss_mask_1.0": 6.19}) is None
    assert training.plateau_warning({"eval_loss": 3.0}) is None  # the GPT-2 baseline has no mask levels


@pytest.mark.slow
def test_a_run_that_ignores_its_context_ends_with_the_warning_and_one_that_reads_it_does_not(tmp_path, caplog):
    # Learning rate 0: the model stays as built, predicting every gap alike whatever surrounds it.
    train.main([*TINY_RUN, "--output-dir", str(tmp_path / "still"), "--learning-rate", "0"])
    assert [r.getMessage() for r in caplog.records if "ignores its context" in r.getMessage()]
    caplog.clear()
    # Each line is one word six times: with the other words visible a gap is certain, with none it is a guess of 40.
    rng = __import__("random").Random(0)
    (tmp_path / "repeats.txt").write_text("\n".join(" ".join([f"w{rng.randrange(40)}"] * 6) for _ in range(600)) + "\n")
    metrics = train.main(["--from-scratch", "--train-file", str(tmp_path / "repeats.txt"), "--line-by-line", "--tokenizer-type",
                          "word", "--max-length", "12", "--max-steps", "120", "--batch-size", "16", "--eval-steps", "60",
                          "--logging-steps", "60", "--disable-tqdm", "true", "--output-dir", str(tmp_path / "reads")])
    assert metrics["eval_loss_mask_0.1"] < 0.8 * metrics["eval_loss_mask_1.0"]
    assert not [r.getMessage() for r in caplog.records if "ignores its context" in r.getMessage()]


def test_the_architecture_default_follows_the_data_layout():
    def architecture(*flags):
        return train.parse_args(["--from-scratch", "--train-file", __file__, *flags])[0].architecture

    assert architecture() == "modernbert"
    assert architecture("--line-by-line") == "deberta"
    assert architecture("--block-size", "8", "--max-length", "64") == "roberta"
    assert architecture("--line-by-line", "--architecture", "roberta") == "roberta"
    assert train.parse_args(["--quick-test"])[0].architecture == "deberta"


@pytest.mark.parametrize(("flags", "keeps_best"), [
    ([], True), (["--save-strategy", "no"], False), (["--eval-strategy", "no"], False), (["--eval-strategy", "epoch"], True),
    (["--eval-strategy", "epoch", "--save-strategy", "steps"], False), (["--eval-steps", "30"], True),
])
def test_the_best_checkpoint_is_kept_whenever_evaluation_and_saving_coincide(flags, keeps_best):
    training_args = train.parse_args(["--quick-test", *flags])[4]
    assert training_args.load_best_model_at_end is keeps_best
    if flags == ["--eval-steps", "30"]:
        assert training_args.save_steps == 30  # saved at every evaluation, so any of them can be the best
