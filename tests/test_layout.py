"""The layout: scripts stand on the library and never on each other; the library is one package whose
sub-packages import only the layers below them, and never a script, config.py or an experiment."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "generate", "visualize_generation", "compare_models", "evaluate", "config", "data_collator"}
# The library's floors, lowest first: a module may import its own floor and those below, never one above.
LAYERS = ["errors", "cli", "data", "masking", "models", "blocks", "sampling", "metrics", "rendering", "training"]


def imports_of(path: Path) -> set[str]:
    """Dotted names of every module `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def floor(dotted: str) -> int | None:
    parts = dotted.split(".")
    return LAYERS.index(parts[1]) if parts[0] == "textdiffusion" and len(parts) > 1 and parts[1] in LAYERS else None


def test_no_script_or_experiment_imports_a_script_or_another_experiment():
    offenders = []
    for path in sorted(ROOT.glob("*.py")) + sorted((ROOT / "experiments").glob("*.py")):
        top = {name.split(".")[0] for name in imports_of(path)}
        others = {n for n in imports_of(path) if n.startswith("experiments.") and not n.startswith("experiments.helpers")}
        bad = (top & (SCRIPTS - {"config"})) | others
        if path.stem == "data_collator" or path.parent.name == "experiments" and "config" in top:
            bad -= {"config"}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_the_library_imports_no_script_no_experiment_and_no_higher_floor():
    offenders = []
    library = sorted((ROOT / "textdiffusion").rglob("*.py"))
    assert len(library) > 20
    for path in library:
        here = floor(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in SCRIPTS or top == "experiments":
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            elif here is not None and (there := floor(name)) is not None and there > here:
                offenders.append(f"{path.relative_to(ROOT)} (floor {LAYERS[here]}) imports {name} (floor {LAYERS[there]})")
    assert offenders == []


def test_every_script_main_goes_through_the_one_usage_error_wrapper():
    for path in [ROOT / f"{name}.py" for name in sorted(SCRIPTS - {"config", "data_collator"})] + sorted((ROOT / "experiments").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "def main(" in source:
            assert 'if __name__ == "__main__":\n    cli.run(main)' in source, path.name
            assert "reports_usage_errors" not in source and "HfArgumentParser(" not in source, path.name


MAX_FUNCTION_LINES = 80


def test_no_function_in_the_library_is_longer_than_80_lines():
    too_long = []
    for path in sorted((ROOT / "textdiffusion").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            length = node.end_lineno - node.lineno + 1 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else 0
            if length > MAX_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert too_long == [], "\n".join(too_long)


def imported_by_name(tree: ast.AST) -> set[str]:
    """Top-level names given as a string to importlib.import_module(...) or __import__(...)."""
    return {node.args[0].value.split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def test_the_library_imports_no_file_of_the_repository_root_and_leaves_sys_path_alone():
    # Every module at the top of the checkout (the scripts, config.py, any added later), experiments/ and tests/
    # are absent from an installed package: the library may not import them, statically or by name.
    root_names = {path.stem for path in ROOT.glob("*.py")} | {"experiments", "tests"}
    assert SCRIPTS <= root_names
    offenders = []
    for path in sorted((ROOT / "textdiffusion").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if bad := ({name.split(".")[0] for name in imports_of(path)} | imported_by_name(tree)) & root_names:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
        if any(isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"
               for node in ast.walk(tree)):
            offenders.append(f"{path.relative_to(ROOT)} uses sys.path")
    assert offenders == [], "\n".join(offenders)
