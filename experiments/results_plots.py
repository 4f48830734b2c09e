"""The results document's plots, drawn from its own tables: one image per section, beside RESULTS.md.

    python -m experiments.results_plots                      # RESULTS.md -> docs/plots/*.png

Each table's figures come from the command its section names; this draws them, so a re-measured table is
re-plotted by running this again. A cell is read as `min / median / max` (over seeds), `value (low-high)` (an
interval), `low-high` (a range), or one number (`**` and a trailing `x` ignored); a row whose plotted cell is
anything else (empty, `-`, prose) is left out of the plot. The quick-test and defaults sections' plots are written
by their experiments (quick_test_seeds, defaults_table), the pretrained one by pretraining.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import tables
from textdiffusion import cli

NUMBER = r"-?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Plot:
    section: str  # the `## ` heading
    file: str
    kind: str  # "dots": one row per table row; "lines": y against a numeric x per group; "scatter": y against x
    y: tuple[str, ...]  # plotted column(s): one series each ("dots"), or the y column
    label: tuple[str, ...] = ()  # columns naming a row ("dots", "scatter") or a group ("lines")
    x: str = ""  # x column ("lines", "scatter")
    table: int = 0  # which table of the section
    axis: str = ""  # the value axis's title
    x_axis: str = ""  # the x axis's title ("lines", "scatter"; default: the x column)
    reference: float | None = None  # a dashed line at this value (1: parity with GPT-2)
    log: bool = False


PLOTS = (
    Plot("Diffusion vs GPT-2 on real text, over training length", "gap_over_steps.png", "lines",
         ("bound / GPT-2, nats (bits per char)",), ("corpus",), x="steps", axis="diffusion bound / GPT-2 (nats)", reference=1),
    Plot("Which sampler", "sampler_choice.png", "dots", ("`auto`'s samples", "the other's samples"), ("kind of model (samples)", "measure"),
         axis="the row's measure: valid share, or the samples' figure over held-out text's", reference=1, log=True),
    Plot("Block diffusion", "block_diffusion.png", "scatter", ("judge ppl / held-out",), ("block", "sampler"), x="speed-up",
         x_axis="batch-1 speed-up over cached GPT-2", axis="samples' judge perplexity / held-out text's", reference=1, log=True),
    Plot("Speed", "speed.png", "dots", ("speed-up",), ("what", "setting"), axis="speed-up (x)", reference=1, log=True),
    Plot("Classifier-free guidance", "cfg_adherence.png", "dots", ("adherence",), ("corpus", "sampler"),
         axis="adherence: judge ppl of the continuation alone / given the prompt"),
    Plot("The seed projects", "seed_projects.png", "dots", ("bound / GPT-2",), ("project",), axis="diffusion bound / GPT-2",
         reference=1),
)


@dataclass
class ResultsPlotsArguments:
    results: str = field(default="RESULTS.md", metadata={"help": "The results document whose tables are drawn."})
    output_dir: str = field(default="docs/plots", metadata={"help": "Where the images go."})


def parse_cell(cell: str) -> tuple[float, float, float] | None:
    """(low, middle, high) of a table cell, or None where it holds no figure of a form read here."""
    text = cell.replace("**", "").strip()
    text = re.sub(rf"({NUMBER})x\b", r"\1", text)
    if m := re.fullmatch(rf"({NUMBER}) / ({NUMBER}) / ({NUMBER})", text):
        return tuple(float(v) for v in m.groups())
    if m := re.fullmatch(rf"({NUMBER}) \(({NUMBER})-({NUMBER})\)", text):
        value, low, high = (float(v) for v in m.groups())
        return low, value, high
    if m := re.fullmatch(rf"({NUMBER})-({NUMBER})", text):
        low, high = float(m[1]), float(m[2])
        return low, (low + high) / 2, high
    if re.fullmatch(NUMBER, text):
        return float(text), float(text), float(text)
    return None


def section_tables(markdown: str) -> dict[str, list[list[dict]]]:
    """Every `## ` section's tables, each a list of rows keyed by the header's cells (subsections included)."""
    sections: dict[str, list[list[dict]]] = {}
    current, header, in_code = None, None, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        if line.startswith("## "):
            current, header = line[3:].strip(), None
            sections[current] = []
        elif current and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                sections[current].append([])
            elif not all(set(c) <= set("-: ") for c in cells):
                sections[current][-1].append(dict(zip(header, cells)))
        else:
            header = None
    return sections


def draw(plot: Plot, rows: list[dict], path: Path) -> int:
    """Draw one plot; returns the number of points drawn."""
    missing = [c for c in (*plot.y, *plot.label, *([plot.x] if plot.x else [])) if rows and c not in rows[0]]
    if missing:
        raise cli.UsageError(f"{plot.section}: its table has no column {missing[0]!r}")
    previous: dict = {}
    for row in rows:  # an empty naming cell continues the row above's (a table's second line of a setting)
        row.update({c: row[c] or previous.get(c, "") for c in plot.label})
        previous = row
    plt = tables.pyplot()
    name = lambda row: " · ".join(row[c].replace("`", "") for c in plot.label)  # noqa: E731
    points = 0
    if plot.kind == "lines":
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for group in dict.fromkeys(name(r) for r in rows):
            cells = [(float(r[plot.x]), parse_cell(r[plot.y[0]])) for r in rows if name(r) == group]
            cells = sorted((x, v) for x, v in cells if v)
            xs, values = [x for x, _ in cells], [v for _, v in cells]
            ax.plot(xs, [v[1] for v in values], marker="o", label=group)
            ax.fill_between(xs, [v[0] for v in values], [v[2] for v in values], alpha=0.2)
            points += len(xs)
        ax.set_xlabel(plot.x_axis or plot.x)
        ax.set_ylabel(plot.axis)
        ax.legend(fontsize=8)
    elif plot.kind == "scatter":
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        kinds = list(dict.fromkeys(row[plot.label[-1]] for row in rows))  # colour: the first naming column; marker: the last
        groups = list(dict.fromkeys(row[plot.label[0]] for row in rows))
        for row in rows:
            x, y = parse_cell(row[plot.x]), parse_cell(row[plot.y[0]])
            if x and y:
                ax.errorbar(x[1], y[1], xerr=[[x[1] - x[0]], [x[2] - x[1]]], yerr=[[y[1] - y[0]], [y[2] - y[1]]], capsize=2,
                            color=f"C{groups.index(row[plot.label[0]]) % 10}", marker="os^Dv*"[kinds.index(row[plot.label[-1]]) % 6],
                            linestyle="none", label=name(row))
                points += 1
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_xlabel(plot.x_axis or plot.x)
        ax.set_ylabel(plot.axis)
        ax.axvline(1, color="grey", linestyle=":", linewidth=1)
    else:
        labels = [name(r) for r in rows]
        fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.32 * len(rows)))
        for i, column in enumerate(plot.y):
            offset = (i - (len(plot.y) - 1) / 2) * 0.25
            for j, row in enumerate(rows):
                if value := parse_cell(row[column]):
                    ax.errorbar(value[1], j + offset, xerr=[[value[1] - value[0]], [value[2] - value[1]]], fmt="o", capsize=2,
                                color=f"C{i}", label=column.replace("`", "") if j == next(k for k, r in enumerate(rows) if parse_cell(r[column])) else None)
                    points += 1
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(plot.axis)
        if len(plot.y) > 1:
            ax.legend(fontsize=8)
    if plot.reference is not None:
        (ax.axvline if plot.kind == "dots" else ax.axhline)(plot.reference, color="grey", linestyle="--", linewidth=1)
    if plot.log:
        from matplotlib.ticker import FormatStrFormatter, LogLocator

        axis = ax.xaxis if plot.kind == "dots" else ax.yaxis
        (ax.set_xscale if plot.kind == "dots" else ax.set_yscale)("log")
        axis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
        for set_formatter in (axis.set_major_formatter, axis.set_minor_formatter):
            set_formatter(FormatStrFormatter("%g"))
    ax.set_title(plot.section, fontsize=10)
    ax.grid(alpha=0.3)
    tables.save_figure(fig, path)
    return points


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = cli.parse_args(ResultsPlotsArguments, argv, __doc__.splitlines()[0])
    if not Path(args.results).is_file():
        raise cli.UsageError(f"--results {args.results}: no such file")
    sections = section_tables(Path(args.results).read_text(encoding="utf-8"))
    drawn = {}
    for plot in PLOTS:
        if plot.section not in sections or len(sections[plot.section]) <= plot.table:
            raise cli.UsageError(f"--results {args.results}: no table {plot.table + 1} in a section '## {plot.section}'")
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        path = Path(args.output_dir) / plot.file
        with cli.atomic_path(path) as partial:
            drawn[plot.file] = draw(plot, sections[plot.section][plot.table], Path(partial))
        print(f"{path}: {drawn[plot.file]} points")
    return drawn


if __name__ == "__main__":
    cli.run(main)
