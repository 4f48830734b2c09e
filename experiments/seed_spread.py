"""Min / median / max over seeds of the figures in several runs' CSV tables: how a trained figure is quoted here.

    python -m experiments.seed_spread --files runs/gap/gap_over_steps.csv runs/gap-seed1/gap_over_steps.csv \\
        runs/gap-seed2/gap_over_steps.csv --by dataset,steps --columns ratio_bits,fixed_judge_ppl/held_out_judge_ppl

Each file is one seed's table (the same experiment run with --seed S into its own --output-dir). Rows are grouped
by the --by columns; for each group and each --columns entry the table gives min / median / max over the files
that hold the group, and how many do (n). An entry `a/b` is the ratio of two columns in each row (the samples'
judge perplexity over the held-out text's, say), taken before the spread. Prints a markdown table and, with
--output, writes it as a CSV (`<column>_min`, `_median`, `_max`).
"""

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import tables
from textdiffusion import cli
from textdiffusion.cli import UsageError


@dataclass
class SpreadArguments:
    files: list[str] = field(default_factory=list, metadata={"help": "One CSV per seed (an experiment's table)."})
    by: str = field(default="dataset,steps", metadata={"help": "Comma-separated columns that name a row (a cell)."})
    columns: str = field(default="ratio_bits", metadata={"help": "Comma-separated columns to spread; `a/b` is a/b per row."})
    output: str | None = field(default=None, metadata={"help": "Also write the table as this CSV."})


def read_table(path: str) -> list[dict]:
    if not Path(path).is_file():
        raise UsageError(f"--files {path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UsageError(f"--files {path}: the table has no rows")
    return rows


def number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def value(row: dict, column: str) -> float:
    """The column's number in this row; `a/b` is the ratio of two columns (NaN where either is missing)."""
    if "/" not in column:
        return number(row[column])
    top, bottom = (number(row[name]) for name in column.split("/", 1))
    return top / bottom if bottom else math.nan


def check_columns(path: str, rows: list[dict], wanted: list[str]) -> None:
    present = set(rows[0])
    missing = [name for column in wanted for name in column.split("/") if name not in present]
    if missing:
        raise UsageError(f"{path} has no column {missing[0]!r}; its columns: {', '.join(rows[0])}")


def spread_rows(tables_by_file: list[list[dict]], by: list[str], columns: list[str]) -> list[dict]:
    """One row per group (in first-seen order): the --by values, n, and min / median / max of each column."""
    groups: dict[tuple, list[dict]] = {}
    for rows in tables_by_file:
        for row in rows:
            groups.setdefault(tuple(row[key] for key in by), []).append(row)
    out = []
    for key, rows in groups.items():
        result = {**dict(zip(by, key)), "n": len(rows)}
        for column in columns:
            values = [v for v in (value(row, column) for row in rows) if not math.isnan(v)]
            stats = tables.min_median_max(values) if values else (math.nan,) * 3
            result.update({f"{column}_min": stats[0], f"{column}_median": stats[1], f"{column}_max": stats[2]})
        out.append(result)
    return out


def parse_names(flag: str, text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--{flag} is empty; give comma-separated column names")
    return names


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(SpreadArguments, argv, __doc__.splitlines()[0])
    if not args.files:
        raise UsageError("--files: give one CSV per seed")
    by, columns = parse_names("by", args.by), parse_names("columns", args.columns)
    tables_by_file = [read_table(path) for path in args.files]
    for path, rows in zip(args.files, tables_by_file):
        check_columns(path, rows, by + columns)
    rows = spread_rows(tables_by_file, by, columns)
    shown = [{**{key: row[key] for key in by + ["n"]},
              **{c: " / ".join(f"{row[f'{c}_{s}']:.3f}" for s in ("min", "median", "max")) for c in columns}} for row in rows]
    print(tables.markdown_table(shown, by + ["n"] + columns, lambda c, v: str(v)))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        tables.write_csv(args.output, rows)
    return rows


if __name__ == "__main__":
    cli.run(main)
