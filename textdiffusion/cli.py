"""The one command-line convention of every script and experiment.

- `main(argv=None)` parses its flags with `parse_args` and raises `UsageError` for bad input, so tests and other
  code can call it and catch the error;
- `run(main)` is what a script's `if __name__ == "__main__":` block calls: a UsageError becomes one line on
  stderr (`error: ...`) and exit code 2, never a traceback;
- per-script defaults go through `parse_args(..., defaults={...})`: the dataclass field keeps its meaning and
  its help, the script changes only the default value (shown in --help).
"""

import logging
import sys
from dataclasses import fields

from transformers import HfArgumentParser

from textdiffusion.errors import SettingsError


class UsageError(SettingsError):
    """Bad input from the user in command-line terms (a flag, a path): reported as one line, exit code 2."""


def run(main, argv: list[str] | None = None):
    """Call `main(argv)`; a UsageError becomes `error: ...` on stderr and exit code 2."""
    try:
        return main(argv)
    except SettingsError as err:  # the library's bad values and the scripts' usage errors alike
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def parser_for(types, description: str | None = None, defaults: dict | None = None, helps: dict | None = None,
               epilog: str | None = None) -> HfArgumentParser:
    """An HfArgumentParser of the dataclass(es) `types`, with this script's `defaults` (field name -> value) and,
    where a field means something more specific in this script, its `helps` (field name -> help text)."""
    types = types if isinstance(types, (list, tuple)) else [types]
    parser = HfArgumentParser(types, description=description, epilog=epilog)
    defaults, helps = defaults or {}, helps or {}
    unknown = (set(defaults) | set(helps)) - {f.name for t in types for f in fields(t)}
    if unknown:
        raise ValueError(f"defaults or helps for fields that do not exist: {sorted(unknown)}")
    parser.set_defaults(**defaults)
    for action in parser._actions:
        if action.dest in helps:
            action.help = helps[action.dest]
        elif action.dest in defaults and action.help:
            action.help += f" Default here: {defaults[action.dest]}."
    return parser


def parse_args(types, argv: list[str] | None = None, description: str | None = None, defaults: dict | None = None,
               helps: dict | None = None):
    """The dataclass instance(s) of `types` from `argv` (None: sys.argv); a tuple when `types` is a tuple/list."""
    parser = parser_for(types, description, defaults, helps)
    parsed = parser.parse_args_into_dataclasses(args=argv)
    return parsed if isinstance(types, (list, tuple)) else parsed[0]


def log_to_stderr() -> None:
    """Every script's log format: time, level, module, message, at INFO."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
