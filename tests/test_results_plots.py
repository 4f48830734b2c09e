"""experiments.results_plots: the results document's plots drawn from its own tables, and every plot the docs show
committed beside them."""

import re
from pathlib import Path

import pytest

from experiments import results_plots
from textdiffusion import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cell, expected", [
    ("1.002 / 1.038 / 1.073", (1.002, 1.038, 1.073)),
    ("**1.002 / 1.038 / 1.073**", (1.002, 1.038, 1.073)),
    ("0.781 (0.727-0.828)", (0.727, 0.781, 0.828)),
    ("4.1-4.6", (4.1, 4.35, 4.6)),
    ("17.7x", (17.7, 17.7, 17.7)),
    ("0.252", (0.252, 0.252, 0.252)),
    ("-", None), ("", None), ("seeds 1, 2: 0.98x, 1.25x; 1.01x", None), ("threshold 0.9", None),
])
def test_a_cell_is_read_as_low_middle_high_or_left_out(cell, expected):
    value = results_plots.parse_cell(cell)
    assert value == (pytest.approx(expected) if expected else None)


def test_sections_tables_skip_code_blocks_and_keep_each_table_apart():
    doc = """# Results
## One
```bash
| not a table |
```
| a | b |
|---|---|
| x | 1 |

text between
| c |
|---|
| 2 |
## Two
| d |
|---|
| 3 |
"""
    sections = results_plots.section_tables(doc)
    assert sections == {"One": [[{"a": "x", "b": "1"}], [{"c": "2"}]], "Two": [[{"d": "3"}]]}


def test_a_continuation_row_takes_the_naming_cells_of_the_row_above(tmp_path):
    plot = results_plots.Plot("S", "s.png", "scatter", ("q",), ("block", "sampler"), x="speed")
    rows = [{"block": "4", "sampler": "threshold", "q": "1 / 2 / 3", "speed": "0.5"},
            {"block": "", "sampler": "32 passes", "q": "9", "speed": "2"},
            {"block": "8", "sampler": "threshold", "q": "-", "speed": "1"}]
    assert results_plots.draw(plot, rows, tmp_path / "s.png") == 2  # the row with no figure is left out
    assert rows[1]["block"] == "4"
    assert (tmp_path / "s.png").stat().st_size > 0


def test_the_results_document_s_plots_are_drawn_from_its_tables(tmp_path):
    drawn = results_plots.main(["--results", str(ROOT / "RESULTS.md"), "--output-dir", str(tmp_path)])
    assert sorted(drawn) == sorted(p.file for p in results_plots.PLOTS)
    for file, points in drawn.items():
        assert points >= 4, file  # every table row it plots carried a figure of a form read here
        assert (tmp_path / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_results_document_without_the_section_is_one_line_and_writes_nothing(tmp_path):
    doc = tmp_path / "R.md"
    doc.write_text("# Results\n## Speed\nno table\n")
    with pytest.raises(cli.UsageError, match="no table 1 in a section"):
        results_plots.main(["--results", str(doc), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    with pytest.raises(cli.UsageError, match="no such file"):
        results_plots.main(["--results", str(tmp_path / "missing.md")])


def test_every_image_the_docs_show_is_committed_and_every_section_has_one():
    for doc in ("README.md", "RESULTS.md"):
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / doc).read_text()):
            assert (ROOT / image).is_file(), f"{doc} shows {image}, which is not in the repository"
    sections = re.split(r"^## ", (ROOT / "RESULTS.md").read_text(), flags=re.M)[1:]
    without = [s.splitlines()[0] for s in sections if "](docs/plots/" not in s]
    assert without == []
