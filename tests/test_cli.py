"""The command-line convention every script shares (textdiffusion.cli): one-line errors with exit code 2, Ctrl-C
as one line with exit code 130, every spelling of a flag, and outputs that are never half-written."""

import runpy
import subprocess
import sys
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import compare_models
import evaluate
import generate
import train
import visualize_generation
from textdiffusion import cli, rendering
from textdiffusion.data import documents

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = [train, generate, visualize_generation, compare_models, evaluate]


def run_script(module, argv, capsys) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of the script's cli.run(main, argv)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda module: module.__name__)
def test_a_mistyped_flag_is_one_line_naming_it_and_the_closest_flag(script, capsys):
    code, err = run_script(script, ["--max-lenght", "10"], capsys)
    assert code == 2 and err == ["error: unknown flag --max-lenght; did you mean --max-length?"]
    code, err = run_script(script, ["--max_lenght=10"], capsys)  # the user's own spelling comes back
    assert code == 2 and err == ["error: unknown flag --max_lenght; did you mean --max_length?"]


def test_the_issue_typo_from_the_command_line_is_one_line_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["generate.py", "--steps-count", "10"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "generate.py"), run_name="__main__")  # the script's own __main__ block
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err == "error: unknown flag --steps-count; did you mean --steps?\n"


def test_an_experiment_reads_flags_the_same_way(capsys):
    from experiments import copy_probe

    code, err = run_script(copy_probe, ["--num-storys", "3", "--zzz"], capsys)
    assert code == 2 and err == ["error: unknown flags --num-storys (did you mean --num-stories?), --zzz (see --help)"]


def test_a_bad_value_is_one_line_naming_the_flag_once_and_what_it_takes(capsys):
    code, err = run_script(generate, ["--max-length", "ten"], capsys)
    assert code == 2 and err == ["error: --max-length: invalid int value: 'ten'"]
    code, err = run_script(generate, ["--sampling=sometimes"], capsys)
    assert code == 2 and err == ["error: --sampling: invalid choice: 'sometimes' (choose from 'greedy', 'topk', 'nucleus')"]
    code, err = run_script(generate, ["stray"], capsys)
    assert code == 2 and err == ["error: unexpected argument 'stray': every option is a --flag (see --help)"]


def test_flags_are_never_abbreviated(capsys):
    code, err = run_script(generate, ["--temp", "0.5"], capsys)
    assert code == 2 and err[0].startswith("error: unknown flag --temp")


# ----------------------------------------------------------------------------- Ctrl-C


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    code, err = run_script(types.SimpleNamespace(main=interrupt), [], capsys)
    assert code == 130 and err == ["interrupted (Ctrl-C)"]


def test_output_piped_into_a_reader_that_leaves_stops_without_a_traceback():
    import subprocess
    import sys

    program = "from textdiffusion import cli; cli.run(lambda argv: [print('line', i) for i in range(10**6)])"
    done = subprocess.run(f"{sys.executable} -c \"{program}\" | head -n 2", shell=True, capture_output=True, text=True)
    assert done.stdout.splitlines() == ["line 0", "line 1"]
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_ctrl_c_before_training_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(documents, "load_documents", interrupt)
    code, err = run_script(train, ["--quick-test", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 130 and err[-1] == "interrupted (Ctrl-C)" and not any("Traceback" in line for line in err)
    assert not (tmp_path / "out").exists()


def interrupt_on_call(count: int, real):
    """`real`, except that call number `count` raises KeyboardInterrupt (Ctrl-C in the middle of writing)."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapped


def files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def test_ctrl_c_while_generate_writes_its_output_leaves_no_file(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setattr(generate, "json", types.SimpleNamespace(dumps=interrupt_on_call(2, json.dumps)))  # after one record
    code, err = run_script(generate, ["--checkpoint", tiny_checkpoint, "--steps", "2", "--max-length", "12", "--num-samples", "3",
                                      "--hide-steps", "--output", str(tmp_path / "out" / "samples.jsonl")], capsys)
    assert code == 130 and err[-1] == "interrupted (Ctrl-C)"
    assert files(tmp_path / "out") == []


def half_a_gif(frames, durations, path):
    Path(path).write_bytes(b"GIF89a")
    raise KeyboardInterrupt


def test_ctrl_c_while_visualize_generation_writes_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rendering, "save_gif", half_a_gif)
    code, err = run_script(visualize_generation, ["--checkpoint", tiny_checkpoint, "--output-dir", str(tmp_path / "vis"),
                                                  "--max-length", "12", "--steps", "2"], capsys)
    assert code == 130 and err[-1] == "interrupted (Ctrl-C)"
    assert files(tmp_path / "vis") == []


def test_ctrl_c_while_compare_models_writes_leaves_nothing(tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rendering, "save_gif", half_a_gif)
    code, err = run_script(compare_models, ["--roberta-checkpoint", tiny_checkpoint, "--gpt2-checkpoint", tiny_gpt2_checkpoint,
                                            "--output", str(tmp_path / "cmp" / "comparison.gif"), "--max-length", "12",
                                            "--steps", "2", "--clock", "nfe"], capsys)
    assert code == 130 and err[-1] == "interrupted (Ctrl-C)"
    assert files(tmp_path / "cmp") == []


def test_ctrl_c_while_evaluate_writes_leaves_neither_file(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setattr(evaluate, "json", types.SimpleNamespace(dumps=interrupt_on_call(3, json.dumps)))  # in samples.jsonl
    code, err = run_script(evaluate, ["--checkpoint", tiny_checkpoint, "--judge", "none", "--max-eval-samples", "8",
                                      "--num-t-samples", "1", "--num-samples", "2", "--steps", "2",
                                      "--output-dir", str(tmp_path / "eval")], capsys)
    assert code == 130 and err[-1] == "interrupted (Ctrl-C)"
    assert files(tmp_path / "eval") == []


def test_atomic_path_renames_a_complete_file_and_removes_an_interrupted_one(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), cli.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert files(tmp_path) == ["out.json"] and target.read_text() == "old"
    with cli.atomic_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert files(tmp_path) == ["out.json"] and target.read_text() == "new"


# ----------------------------------------------------------------------------- one way to read flags


@dataclass
class Options:
    objective: str = field(default="diffusion", metadata={"help": "Which model."})
    max_length: int = field(default=48, metadata={"help": "Tokens.", "aliases": ["--length"]})
    quick_test: bool = field(default=False, metadata={"help": "Preset."})


@pytest.mark.parametrize("argv", [["--objective", "ar", "--max-length", "8"], ["--objective=ar", "--max_length=8"],
                                  ["--objective=ar", "--length", "8"], ["--length=8", "--objective", "ar"]])
def test_given_reads_every_spelling_of_a_flag_and_only_the_flags_given(argv):
    assert cli.given(cli.parser_for(Options, add_help=False), argv) == {"objective": "ar", "max_length": 8}
    assert cli.given(cli.parser_for(Options, add_help=False), ["--quick-test"]) == {"quick_test": True}
    assert cli.parse(cli.parser_for(Options), argv) == (Options(objective="ar", max_length=8),)


def test_aliases_of_a_field_that_is_not_ours_parse_into_it_in_both_spellings():
    parser = cli.parser_for(Options, aliases={"--tokens": "max_length", "--n_tokens": "max_length"}, defaults={"max_length": 16})
    assert cli.parse(parser, ["--tokens=9"])[0].max_length == 9
    assert cli.parse(parser, ["--n_tokens", "7"])[0].max_length == 7
    assert cli.parse(parser, [])[0].max_length == 16
    with pytest.raises(cli.UsageError, match="--tokens: invalid int value: 'x'"):
        cli.parse(parser, ["--tokens", "x"])


def test_hidden_fields_parse_and_show_only_in_help_all(capsys):
    parser = cli.parser_for(Options, hidden={"quick_test"})
    assert cli.parse(parser, ["--quick-test"])[0].quick_test
    assert "--quick-test" not in parser.format_help() and "--help-all" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help-all"])
    assert "--quick-test" in capsys.readouterr().out


# ----------------------------------------------------------------------------- quiet by default, --verbose


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda module: module.__name__)
def test_every_script_accepts_verbose(script, capsys):
    code, err = run_script(script, ["--verbose", "--max-lenght", "10"], capsys)  # --verbose parsed, the typo not
    assert code == 2 and err == ["error: unknown flag --max-lenght; did you mean --max-length?"]
    assert "--verbose" in cli.parser_for(Options).format_help()


def _pin_memory_warnings(verbose: bool) -> list[str]:
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.quiet_libraries(verbose)
        list(torch.utils.data.DataLoader(list(range(4)), batch_size=2, pin_memory=True))
    cli.quiet_libraries(False)
    return [str(w.message) for w in caught if "pin_memory" in str(w.message)]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the warning is for a machine without a GPU")
def test_the_pin_memory_warning_is_hidden_unless_verbose():
    assert _pin_memory_warnings(verbose=False) == []
    assert len(_pin_memory_warnings(verbose=True)) >= 1


def test_quiet_hides_library_progress_bars_and_keeps_the_training_bar():
    import datasets
    import transformers

    cli.quiet_libraries(False)
    assert not transformers.logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    training_args = next(p for p in cli.parse(train.build_parser(), ["--quick-test"]) if hasattr(p, "disable_tqdm"))
    assert training_args.disable_tqdm is False  # the Trainer's own bar of training steps stays
    cli.quiet_libraries(True)
    assert transformers.logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    cli.quiet_libraries(False)


@pytest.mark.slow
def test_a_script_run_prints_no_library_bars_unless_verbose(tiny_checkpoint):
    argv = [sys.executable, "generate.py", "--checkpoint", tiny_checkpoint, "--max-length", "12", "--num-samples", "1",
            "--hide-steps"]
    quiet = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert quiet.returncode == 0 and quiet.stdout.strip()
    assert "Loading weights" not in quiet.stderr and "pin_memory" not in quiet.stderr and "it/s]" not in quiet.stderr
    assert " INFO __main__: 1 samples" in quiet.stderr  # the script's own log stays
    verbose = subprocess.run([*argv, "--verbose"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr
