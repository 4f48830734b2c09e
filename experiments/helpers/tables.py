"""The experiments' tables: markdown tables and min / median / max over seeds, beside the library's CSV and figure helpers.
"""

import math
import statistics

from textdiffusion.metrics.tables import format_table, pyplot, save_figure, write_csv  # noqa: F401  (the experiments' one import)


def min_median_max(values) -> tuple[float, float, float]:
    """(min, median, max) of measurements over seeds (the project's way of quoting a trained figure)."""
    values = sorted(values)
    return values[0], statistics.median(values), values[-1]


def spread(values) -> str:
    """'min A, median B, max C' of measurements over seeds."""
    low, median, high = min_median_max(values)
    return f"min {low:.3f}, median {median:.3f}, max {high:.3f}"


def markdown_table(rows: list[dict], columns: list[str], cell=None) -> str:
    """Result rows as a markdown table. `cell(column, value)` formats one value; by default floats get two
    decimals and a missing or NaN value is '-'."""

    def default(column, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    cell = cell or default
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
