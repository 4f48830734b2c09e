"""The layout rules of issue 10: scripts stand on the library and never on each other."""

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "generate", "visualize_generation", "compare_models", "evaluate"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
            if node.module == "experiments":  # from experiments import x
                names |= {f"experiments.{alias.name}" for alias in node.names}
    return names


def project_files() -> list[Path]:
    return sorted(ROOT.glob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))


def test_no_script_library_module_or_experiment_imports_a_script_or_an_experiment():
    offenders = []
    for path in project_files():
        imports = imported_modules(path)
        bad = (imports & SCRIPTS) | {name for name in imports if name.startswith("experiments.")}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_every_library_module_is_installed_and_no_script_is():
    installed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"])
    library = {path.stem for path in ROOT.glob("*.py")} - SCRIPTS
    assert installed == library
    assert not installed & SCRIPTS


def test_every_script_main_goes_through_the_one_usage_error_wrapper():
    for path in [ROOT / f"{name}.py" for name in sorted(SCRIPTS)] + sorted((ROOT / "experiments").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "def main(" in source:
            assert 'if __name__ == "__main__":\n    cli.run(main)' in source, path.name
            assert "reports_usage_errors" not in source and "HfArgumentParser(" not in source, path.name
