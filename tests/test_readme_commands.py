"""Every command line in README.md's code blocks copy-pastes as written: it names a script, module or file that
exists, holds no shell pipe or alternatives, and its flags parse with that script's own parser (nothing runs)."""

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import tomllib

from textdiffusion import cli

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PROGRAMS = ("python", "python3", ".venv/bin/python", "pip", "pip3", "bash", "open", "source", "cp", "mkdir", "cd")
OPERATOR = re.compile(r"^[|&;<>()]+$")  # a shell operator: a pipe, "||", "&&", ";", a redirection


def readme_commands(markdown: str) -> list[str]:
    """The command lines of the fenced code blocks: lines starting with a program of PROGRAMS, a line ending in
    a backslash joined with the next, comment lines and trailing comments left out."""
    commands, block, pending = [], False, ""
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            block, pending = not block, ""
            continue
        if not block:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if not line.split() or line.split()[0] not in PROGRAMS:
            continue  # prose or a file tree inside a block
        try:
            words = _words(line)
        except ValueError:  # an unclosed quote: kept as written, so its check says so
            commands.append(line)
            continue
        commands.append(" ".join(shlex.quote(w) if OPERATOR.match(w) is None else w for w in words))
    return commands


def _words(line: str) -> list[str]:
    """The shell words of `line` (quotes removed, a trailing comment dropped), shell operators as words of their own."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    return list(lexer)


class _Parsed(Exception):
    """Raised by cli.parse once the flags are read, so the script stops before it does anything."""


def parses(module, argv: list[str], monkeypatch) -> None:
    """Run `module.main(argv)` up to its flags' parse: a UsageError (unknown flag, bad value) fails the test."""
    real = cli.parse

    def parse_then_stop(parser, args=None):
        real(parser, args)
        raise _Parsed

    monkeypatch.setattr(cli, "parse", parse_then_stop)
    try:
        module.main(argv)
    except _Parsed:
        return
    except SystemExit as exit_:  # --help
        assert exit_.code == 0, f"{module.__name__} {' '.join(argv)} exits {exit_.code}"
        return
    pytest.fail(f"{module.__name__}.main returned without parsing its flags through textdiffusion.cli")


def check_command(command: str, monkeypatch) -> None:
    try:
        words = _words(command)
    except ValueError as err:
        pytest.fail(f"{command!r}: {err} (a quote is not closed)")
    operators = [w for w in words if OPERATOR.match(w)]
    assert not operators, f"{command!r}: {operators[0]!r} is shell syntax, not one command to paste"
    program, args = words[0], words[1:]
    if program in ("python", "python3", ".venv/bin/python"):
        check_python(args, monkeypatch)
    elif program in ("pip", "pip3"):
        check_pip(args)
    elif program in ("bash", "open"):
        assert args and (REPO / args[0]).is_file(), f"{command!r}: no file {args[0] if args else '(none)'} in the repository"


def check_python(args: list[str], monkeypatch) -> None:
    assert args, "python with nothing to run"
    if args[0] == "-m":
        name, flags = args[1], args[2:]
        assert importlib.util.find_spec(name) is not None, f"python -m {name}: no such module"
        if name.startswith("experiments."):
            parses(importlib.import_module(name), flags, monkeypatch)
        return
    script, flags = args[0], args[1:]
    assert script.endswith(".py") and "/" not in script, f"python {script}: the scripts are the .py files at the root"
    assert (REPO / script).is_file(), f"python {script}: no such script in the repository"
    parses(importlib.import_module(script.removesuffix(".py")), flags, monkeypatch)


def check_pip(args: list[str]) -> None:
    if args[:2] == ["install", "-e"] or args[:1] == ["install"] and args[1:2] and args[1].startswith("."):
        target = args[2] if args[1] == "-e" else args[1]
        extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
        assert extras, f"pip install {target}: the repository is installed as . or .[extra]"
        declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
        for extra in filter(None, (extras.group(1) or "").split(",")):
            assert extra in declared, f"pip install {target}: pyproject.toml has no extra {extra!r} ({', '.join(declared)})"


# ----------------------------------------------------------------------------- the extraction itself


def test_commands_are_read_from_code_blocks_with_continuations_and_without_comments():
    markdown = """python outside.py --no
```bash
# a comment line
python train.py --quick-test      # about 3 min
python compare_models.py --prompt "the # not a comment" \\
    --metrics
pip install -e ".[dev]"
textdiffusion/           the library
python generate.py --sampling greedy | --sampling topk
python generate.py --prefix "it's
textdiffusion's files
```
"""
    assert readme_commands(markdown) == [
        "python train.py --quick-test",
        "python compare_models.py --prompt 'the # not a comment' --metrics",
        "pip install -e '.[dev]'",
        "python generate.py --sampling greedy | --sampling topk",
        "python generate.py --prefix \"it's",
    ]


def test_a_pipe_an_unknown_flag_or_a_missing_script_fails(monkeypatch):
    for command, message in [
        ("python generate.py --prefix \"it's", "a quote is not closed"),
        ("python generate.py --sampling greedy | --sampling topk", "shell syntax"),
        ("python generate.py --sampling greedy || true", "shell syntax"),
        ("python generate.py --smapling greedy", "unknown flag --smapling"),
        ("python nowhere.py", "no such script"),
        ("python -m experiments.nowhere", "no such module"),
        ("pip install -e '.[nothing]'", "no extra 'nothing'"),
    ]:
        with pytest.raises((AssertionError, cli.UsageError, pytest.fail.Exception), match=re.escape(message)):
            check_command(command, monkeypatch)


def test_the_flags_of_a_good_command_parse_and_nothing_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a command that ran would write results/ here
    for command in ["python generate.py --num-samples 8 --hide-steps", "python train.py --quick-test --objective ar",
                    "python evaluate.py --help", "python -m experiments.quick_test_seeds --help"]:
        check_command(command, monkeypatch)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- README.md as it is


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands_for_every_script():
    named = " ".join(COMMANDS)
    for script in ("train.py", "generate.py", "visualize_generation.py", "compare_models.py", "evaluate.py"):
        assert f"python {script}" in named, f"README.md shows no command for {script}"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_names_what_exists_and_its_flags_parse(command, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths in a command are only parsed, never read or written
    check_command(command, monkeypatch)
