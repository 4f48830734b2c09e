"""Result tables: the plain-text table of an evaluation, CSV files and matplotlib figures.
"""

import csv

COLUMNS = (
    ("ppl", "ppl", "{:.3f}"),
    ("nats_per_token", "nats/tok", "{:.4f}"),
    ("nats_per_token_stderr", "+- s.e.", "{:.4f}"),
    ("bits_per_byte", "bits/byte", "{:.4f}"),
    ("gen_ppl", "gen ppl", "{:.3f}"),
    ("entropy", "entropy", "{:.3f}"),
    ("mauve", "MAUVE", "{:.3f}"),
    ("distinct_1", "dist-1", "{:.3f}"),
    ("distinct_2", "dist-2", "{:.3f}"),
    ("distinct_3", "dist-3", "{:.3f}"),
    ("repetition", "rep-3", "{:.3f}"),
    ("valid_rate", "valid [95%]", "{:.3f}"),
    ("novel_valid_rate", "novel", "{:.3f}"),
    ("forward_passes", "passes", "{}"),
    ("seconds", "seconds", "{:.2f}"),
    ("tokens_per_s", "tok/s", "{:.0f}"),
)


def format_table(table: list[dict]) -> str:
    """A plain-text table of `report`'s rows; a column is shown when any row has it."""
    columns = [c for c in COLUMNS if any(c[0] in row for row in table)]
    header = ["model"] + [title + (" (bound)" if key == "ppl" and not all(r.get("exact", True) for r in table) else "")
                          for key, title, _ in columns]
    lines = [header]
    for row in table:
        name = row["model"] + ("" if row.get("exact", True) or "ppl" not in row else " *")
        lines.append([name] + [_cell(row, key, fmt) for key, _, fmt in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))) for line in lines)
    if any(not r.get("exact", True) for r in table):
        text += ("\n* an upper bound on perplexity (the ELBO, MDLM) with its Monte Carlo standard error; causal-LM "
                 "perplexities are exact. Both are per document token (line-by-line filler end tokens not counted).")
    counts = sorted({r["num_samples"] for r in table if "valid_low" in r})
    if counts:
        text += (f"\nvalid: the share of valid stories among {' / '.join(map(str, counts))} samples, "
                 "[its 95% Wilson interval].")
    return text


def _cell(row: dict, key: str, fmt: str) -> str:
    if key not in row:
        return "-"
    if key == "valid_rate" and "valid_low" in row:
        return f"{row[key]:.3f} [{row['valid_low']:.2f}, {row['valid_high']:.2f}]"
    return fmt.format(row[key])


def write_csv(path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Write result rows (dicts) as a CSV with a header; the experiments all report this way."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed); called where a plot is drawn, so
    importing a module never loads matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, layout: str | None = "crop") -> None:
    """Write `fig` to `path` at the experiments' resolution and free it. layout "tight": lay the panels out first;
    "crop": crop to what is drawn (legends outside the axes included); None: as drawn."""
    plt = pyplot()
    if layout == "tight":
        fig.tight_layout()
    fig.savefig(path, dpi=110, **({"bbox_inches": "tight"} if layout == "crop" else {}))
    plt.close(fig)
