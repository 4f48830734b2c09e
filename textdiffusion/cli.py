"""The one command-line convention of every script and experiment.

- `main(argv=None)` reads its flags with `parse_args` (or `parse` on a parser from `parser_for`) and raises
  `UsageError` for bad input: an unknown flag (named, with the closest valid one), a value a flag does not take,
  a value its dataclass refuses. Tests and other code call `main([...])` and catch the error;
- `run(main)` is what a script's `if __name__ == "__main__":` block calls: a UsageError (or any of the library's
  SettingsErrors) becomes one line on stderr (`error: ...`) and exit code 2, Ctrl-C one line and exit code 130,
  never a traceback;
- per-script defaults go through `parser_for(..., defaults={...})`: the dataclass field keeps its meaning and
  its help, the script changes only the default value (--help shows the script's own);
- every output file is written through `atomic_path`: under a temporary name, renamed when complete, so an error
  or Ctrl-C never leaves a half-written file;
- every parser has `--verbose`; without it `parse` hides what the libraries print that means nothing to a user
  (`quiet_libraries`: transformers' and datasets' progress bars and warnings, torch's pin_memory warning). A
  script's own log and its training progress bar stay.

`--max-length 8`, `--max-length=8`, `--max_length 8` and a field's seed-project aliases all mean the same; flags
are never abbreviated (`--max 8` is an unknown flag, not a guess).
"""

import argparse
import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from textdiffusion.errors import SettingsError


class UsageError(SettingsError):
    """Bad input from the user in command-line terms (a flag, a path): reported as one line, exit code 2."""


def run(main, argv: list[str] | None = None):
    """Call `main(argv)`; a UsageError becomes `error: ...` on stderr and exit code 2, Ctrl-C exit code 130."""
    try:
        return main(argv)
    except SettingsError as err:  # the library's bad values and the scripts' usage errors alike
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `script | head`: the reader left; stop quietly (Python's documented way)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors are UsageErrors (one line, not the usage text and a SystemExit)."""

    def error(self, message: str):
        # argparse names a flag by all its spellings ("--max_length/--max-length"): keep the dashed one.
        raise UsageError(re.sub(r"--[\w-]+(?:/--[\w-]+)+", _one_spelling, message.removeprefix("argument ")))


def _one_spelling(match: re.Match) -> str:
    names = match.group(0).split("/")
    return next((name for name in names if "_" not in name), names[0])


METAVARS = {int: "N", float: "X", string_to_bool: "BOOL"}  # the word --help shows for a flag's value, by its type


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag once, in its dashed spelling (the underscore one parses too), with its aliases, a short word for
    its value (N, X, BOOL, TEXT or the choices) and its default unless that is None."""

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = [s for s in action.option_strings if not ("_" in s and s.replace("_", "-") in action.option_strings)]
        if action.nargs == 0:
            return ", ".join(names)
        if action.choices and len(",".join(map(str, action.choices))) > 60:  # a list that long: the help names the usual ones
            return ", ".join(names) + " NAME"
        return ", ".join(names) + " " + self._format_args(action, METAVARS.get(action.type, "TEXT"))

    def _get_help_string(self, action):
        return action.help if action.default in (None, "") else super()._get_help_string(action)


class _HelpAll(argparse.Action):
    """--help-all: the help with the options --help leaves out."""

    def __init__(self, option_strings, dest, hidden: dict, help: str | None = None):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)
        self.hidden = hidden  # action -> its help text

    def __call__(self, parser, namespace, values, option_string=None):
        for action, text in self.hidden.items():
            action.help = text
        parser.print_help()
        parser.exit()


def parser_for(types, description: str | None = None, defaults: dict | None = None, helps: dict | None = None,
               epilog: str | None = None, aliases: dict | None = None, hidden: Collection[str] = (),
               add_help: bool = True) -> ArgumentParser:
    """An ArgumentParser of the dataclass(es) `types`, with this script's `defaults` (field name -> value) and,
    where a field means something more specific in this script, its `helps` (field name -> help text).

    `aliases` (flag -> field name) are more names of a field that is not ours to annotate (TrainingArguments');
    `hidden` fields parse as usual but appear only in `--help-all`, which is then added. `add_help=False`: no
    --help at all (the first pass of a two-pass parse, see `given`).
    """
    types = types if isinstance(types, (list, tuple)) else [types]
    parser = ArgumentParser(types, description=description, epilog=epilog, allow_abbrev=False, add_help=add_help,
                            formatter_class=HelpFormatter, usage="%(prog)s [options]")
    defaults, helps, aliases = defaults or {}, helps or {}, aliases or {}
    names = {f.name for t in types for f in fields(t)}
    unknown = (set(defaults) | set(helps) | set(aliases.values()) | set(hidden)) - names
    if unknown:
        raise ValueError(f"defaults, helps, aliases or hidden fields that do not exist: {sorted(unknown)}")
    parser.set_defaults(**defaults)
    for action in parser._actions:
        if action.dest in helps:
            action.help = helps[action.dest]
    for alias, name in aliases.items():
        _add_alias(parser, alias, name)
    complements = {a: a.help for a in parser._actions if a.option_strings and a.option_strings[0].startswith("--no_")}
    off = {a: a.help for a in parser._actions if a.dest in hidden and a.help != argparse.SUPPRESS} | complements
    for action in off:
        action.help = argparse.SUPPRESS  # --no-kv-cache still parses; --help lists only --kv-cache [BOOL]
    if hidden and add_help:
        parser.add_argument("--help-all", action=_HelpAll, hidden=off, help="Show every option, those --help leaves out too, and exit.")
    if "verbose" not in names:
        parser.add_argument("--verbose", action="store_true", help="Also show the libraries' progress bars and warnings "
                            "(weight loading, dataset maps, pin_memory ...), hidden by default.")
    return parser


def _add_alias(parser: ArgumentParser, alias: str, name: str) -> None:
    """`alias` as one more spelling of field `name`: the same type and values, parsed into the same field."""
    action = next(a for a in parser._actions if a.dest == name and a.option_strings)
    parser.add_argument(alias, dest=name, type=action.type, nargs=action.nargs, const=action.const, choices=action.choices,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    if action.help and alias.replace("_", "-") not in action.help:  # --batch_size: --batch-size is named already
        action.help += f" Also {alias.replace('_', '-')}."


def parse(parser: ArgumentParser, argv: list[str] | None = None) -> tuple:
    """The parser's dataclass instances from `argv` (None: sys.argv); an unknown flag or a value a dataclass
    refuses is a UsageError."""
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(unknown_flags(parser, unknown))
    values = vars(namespace)
    quiet_libraries(verbose=values.get("verbose", False))
    parsed = []
    for dtype in parser.dataclass_types:
        names = {f.name for f in fields(dtype) if f.init}
        try:
            parsed.append(dtype(**{k: v for k, v in values.items() if k in names}))
        except SettingsError:
            raise
        except ValueError as err:  # a check of the dataclass itself (TrainingArguments' own), in its own words
            raise UsageError(" ".join(str(err).split())) from err
    return tuple(parsed)


def given(parser: ArgumentParser, argv: list[str] | None = None) -> dict:
    """The options `argv` sets, as field name -> value, read as the script's own parser reads them (so
    `--objective=ar`, `--objective ar` and an alias all count): the first pass of a two-pass parse whose defaults
    depend on the flags given. `parser`: the script's parser built with add_help=False (so --help waits for the
    second pass) and no `defaults`; its actions' defaults are replaced here. Unknown flags wait for the second pass."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # an option not given leaves no attribute
    return vars(parser.parse_known_args(argv)[0])


def unknown_flags(parser: ArgumentParser, unknown: list[str]) -> str:
    """One line naming the unknown flags, each with the closest valid flag when one is close."""
    flags = [arg.split("=")[0] for arg in unknown if arg.startswith("-")]
    if not flags:
        return f"unexpected argument {unknown[0]!r}: every option is a --flag (see --help)"
    known = {s for action in parser._actions for s in action.option_strings if s.startswith("--")}
    words = sorted({s[2:].replace("_", "-") for s in known})  # compared without "--", which every flag shares

    def hint(flag: str) -> str:
        close = difflib.get_close_matches(flag.lstrip("-").replace("_", "-"), words, n=1, cutoff=0.6)
        if not close:
            return "see --help"
        spelled = "--" + close[0].replace("-", "_")  # the user's own spelling, where it exists
        return f"did you mean {spelled if '_' in flag and spelled in known else '--' + close[0]}?"

    if len(flags) == 1:
        return f"unknown flag {flags[0]}" + (f"; {hint(flags[0])}" if hint(flags[0]).startswith("did") else " (see --help)")
    return "unknown flags " + ", ".join(f"{flag} ({hint(flag)})" for flag in flags)


def parse_args(types, argv: list[str] | None = None, description: str | None = None, defaults: dict | None = None,
               helps: dict | None = None):
    """The dataclass instance(s) of `types` from `argv` (None: sys.argv); a tuple when `types` is a tuple/list."""
    parsed = parse(parser_for(types, description, defaults, helps), argv)
    return parsed if isinstance(types, (list, tuple)) else parsed[0]


@contextmanager
def atomic_path(path):
    """A temporary name beside `path` to write to: renamed to `path` when the block completes, removed when it
    raises (an error or Ctrl-C), so `path` is never half-written. The suffix is kept (PIL picks a format by it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# Library output hidden unless --verbose: each means nothing a user can act on.
_NOISE = (
    # torch's DataLoader on a machine without a GPU, for the Trainer's default dataloader_pin_memory=True
    r".*'pin_memory' argument is set as true but no accelerator is found.*",
)


def quiet_libraries(verbose: bool = False) -> None:
    """Hide transformers' and datasets' progress bars (weight loading, shard writing, dataset maps) and warnings,
    and the warnings in _NOISE; `verbose`: the libraries' own defaults (all shown). The Trainer's progress bar of
    training steps is its own tqdm and stays either way."""
    import datasets
    import transformers

    for message in _NOISE:
        warnings.filters[:] = [f for f in warnings.filters if not (f[0] == "ignore" and f[1] is not None and f[1].pattern == message)]
        if not verbose:
            warnings.filterwarnings("ignore", message=message)
    if verbose:
        transformers.logging.set_verbosity_warning()
        transformers.logging.enable_progress_bar()
        datasets.logging.set_verbosity_warning()
        datasets.enable_progress_bars()
    else:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    # TrainingArguments turns the training bar off when its logger is quieter than WARNING (disable_tqdm=None):
    # that bar stays.
    logging.getLogger("transformers.training_args").setLevel(logging.NOTSET if verbose else logging.WARNING)


def log_to_stderr() -> None:
    """Every script's log format: time, level, module, message, at INFO."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
