"""The installed package on its own: a wheel built from the sources, installed into a fresh virtual environment,
imported from a directory outside the repository, samples through the public API and puts only `textdiffusion`
and its dist-info into site-packages."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest

import textdiffusion

ROOT = Path(__file__).resolve().parents[1]
# Import names of the dependencies the snippet below needs; the fresh environment reads them from where this
# interpreter found them, so the test installs nothing from an index.
DEPENDENCIES = ["torch", "transformers", "tokenizers", "safetensors", "datasets", "accelerate", "PIL", "imageio",
                "matplotlib", "tqdm", "numpy", "huggingface_hub"]
# A working directory that holds files with the generic names the seed project's modules had: if the package
# imported `config` or `models` by those names, Python would pick these up from the working directory.
DECOYS = ["config", "models", "tables", "cli", "sampling", "corpus"]

SETTINGS = {"num_samples": 2, "max_length": 16, "steps": 4, "seed": 3}
SNIPPET = """
import importlib, json, sys, sysconfig
import torch
import textdiffusion

torch.set_num_threads(1)  # as in the tests' process, so that both draw the same tokens

for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
checkpoint = textdiffusion.load_checkpoint(sys.argv[1])
out = textdiffusion.generate(checkpoint, textdiffusion.GenerationSettings(**json.loads(sys.argv[3])))
print(json.dumps({
    "site_packages": sysconfig.get_paths()["purelib"],
    "package": textdiffusion.__file__,
    "texts": out.texts,
    "modules": {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if getattr(m, "__file__", None)},
}))
"""


def source_tree(destination: Path) -> Path:
    """A copy of the files a clean clone has (tracked, or new and not ignored), so that building writes its build/
    and egg-info into the copy rather than into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def build_wheel(source: Path, directory: Path) -> Path:
    """The wheel, built with this environment's setuptools when it is recent enough (offline), else in pip's
    isolated build environment (which fetches setuptools from the index)."""
    isolation = [] if setuptools_version() < (68,) else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(directory),
                    str(source)], check=True)
    (wheel,) = directory.glob("*.whl")
    return wheel


def setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in re.findall(r"\d+", metadata.version("setuptools"))[:2])
    except metadata.PackageNotFoundError:
        return ()


def fresh_environment(directory: Path, wheel: Path) -> tuple[Path, Path]:
    """A venv without pip holding only the wheel; returns its interpreter and site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    # This environment's pip installs into the new one's site-packages, before the dependency paths below exist
    # there (a pip running in the new environment would then see this checkout's editable install and replace it).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(site_packages), str(wheel)], check=True)
    return python, site_packages


def dependency_directories() -> list[str]:
    """The directories this interpreter imports the dependencies from. Listed in a .pth file they go on the new
    environment's sys.path, but the .pth files inside them (the editable install's finder) are not run."""
    return sorted({str(Path(find_spec(name).origin).parent.parent) for name in DEPENDENCIES})


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("wheel")
    return build_wheel(source_tree(directory / "src"), directory / "dist")


def library_files(wheel: Path) -> set[str]:
    """The library's .py files in the tree the wheel was built from, as paths relative to that tree."""
    source = wheel.parent.parent / "src"
    return {p.relative_to(source).as_posix() for p in (source / "textdiffusion").rglob("*.py")}


def test_the_wheel_holds_only_textdiffusion_and_its_dist_info(wheel):
    archive = zipfile.ZipFile(wheel)
    (dist_info,) = {name.split("/")[0] for name in archive.namelist() if name.endswith(".dist-info/RECORD")}
    assert re.fullmatch(r"text_diffusion-[^-/]+\.dist-info", dist_info)
    assert {name.split("/")[0] for name in archive.namelist()} == {"textdiffusion", dist_info}
    record = archive.read(f"{dist_info}/RECORD").decode().splitlines()
    assert {line.split(",")[0].split("/")[0] for line in record if line} == {"textdiffusion", dist_info}
    # Every module of the library is in it.
    assert {name for name in archive.namelist() if name.endswith(".py")} == library_files(wheel)


def test_the_installed_wheel_samples_from_outside_the_repository_past_decoy_modules(wheel, tmp_path, tiny_checkpoint):
    python, site_packages = fresh_environment(tmp_path / "venv", wheel)
    distribution, version = wheel.name.split("-")[:2]
    assert sorted(p.name for p in site_packages.iterdir()) == [f"{distribution}-{version}.dist-info", "textdiffusion"]
    outside = dependency_directories()
    assert str(ROOT) not in outside
    (site_packages / "dependencies.pth").write_text("\n".join(outside) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    for name in DECOYS:
        (work / f"{name}.py").write_text(f"raise ImportError('the decoy {name}.py in the working directory was imported')\n")
    modules = sorted(name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in library_files(wheel))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    done = subprocess.run([str(python), "-c", SNIPPET, tiny_checkpoint, json.dumps(modules), json.dumps(SETTINGS)], check=False, cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["site_packages"]) == site_packages
    assert Path(result["package"]) == site_packages / "textdiffusion" / "__init__.py"
    library = {name: file for name, file in result["modules"].items() if name.split(".")[0] == "textdiffusion"}
    assert set(modules) <= set(library) and all(Path(file).is_relative_to(site_packages) for file in library.values())
    from_checkout = [f"{name}: {file}" for name, file in result["modules"].items()
                     if Path(file).is_relative_to(ROOT) and not any(Path(file).is_relative_to(d) for d in outside)]
    assert from_checkout == []
    assert not set(DECOYS) & set(result["modules"])
    # The same texts as the checkout's package gives for the same settings and seed.
    expected = textdiffusion.generate(textdiffusion.load_checkpoint(tiny_checkpoint), textdiffusion.GenerationSettings(**SETTINGS))
    assert result["texts"] == expected.texts and len(expected.texts) == SETTINGS["num_samples"]
