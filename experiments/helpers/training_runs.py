"""One `train.py` (or benchmark) run as a subprocess, timed and measured: what the experiments that train many models share.

The run's measurements are cached in OUTPUT_DIR/row.json, so a grid or a set of seeds that stopped half-way
continues where it stopped (delete the folder to measure again).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from textdiffusion.cli import UsageError
from textdiffusion.metrics import text_metrics

ROOT = Path(__file__).resolve().parents[2]  # the repository root, where train.py is


def ar_training_steps(settings: dict) -> int:
    """GPT-2's training steps in a real-text benchmark's settings: --ar-steps where given, else --max-steps."""
    return settings.get("ar_steps") or settings["max_steps"]


def ar_run_folder(output_root, settings: dict) -> Path:
    """GPT-2's run folder of a real-text benchmark (experiments/benchmark.py's settings, as saved in its
    benchmark.json): named by everything that shapes its training, so every diffusion recipe with the same AR
    settings shares it."""
    lr = settings.get("ar_learning_rate") or settings["learning_rate"]
    steps = ar_training_steps(settings)
    return (Path(output_root) / settings["dataset"] /
            f"ar-{settings['tokenizer_type']}-{settings['model_size']}-L{settings['max_length']}-v{settings['vocab_size']}"
            f"-b{settings['batch_size']}-s{steps}-w{settings['warmup_steps']}-lr{lr:g}-seed{settings['seed']}")


def train_and_measure(flags: list[str], directory: Path, threads: int | None = None, num_samples: int = 0, resample: bool = False) -> dict:
    """Run `train.py FLAGS --output-dir DIRECTORY` (log beside it, DIRECTORY.log) unless it was measured before.

    Returns train_seconds (the whole command), eval_loss and eval_elbo of its final evaluation and, with
    `num_samples` (built-in corpus only), text_metrics.checkpoint_story_quality of the final model. A failed run raises
    UsageError naming its log. `resample`: a run measured before has its samples drawn and checked again (after a
    sampler change), without training again.
    """
    directory = Path(directory)
    cached = directory / "row.json"
    if cached.is_file():
        row = json.loads(cached.read_text())
        if num_samples and (resample or "ancestral_valid_rate" not in row) and (directory / "final-model").is_dir():
            # measured before the sample measures grew: measure the trained model again, do not train it again
            row.update(text_metrics.checkpoint_story_quality(str(directory / "final-model"), num_samples, threads=threads))
            cached.write_text(json.dumps(row))
        return row
    if (directory / "metrics.json").is_file() and (directory / "final-model").is_dir() and not num_samples:
        # Finished (train.py writes metrics.json last) but measured by another process: reuse it, untimed.
        final = json.loads((directory / "metrics.json").read_text())
        row = {"train_seconds": None, "eval_loss": final["eval_loss"], "eval_elbo": final.get("eval_elbo")}
        cached.write_text(json.dumps(row))
        return row
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log_path = directory.with_name(f"{directory.name}.log")
    directory.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with open(log_path, "w") as log:
        # The cell's own folder: a run that stopped before its row.json is replaced (train.py's log names what goes).
        code = subprocess.call([sys.executable, "train.py", *flags, "--output-dir", str(directory), "--overwrite-output-dir"],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - began
    if code != 0:
        raise UsageError(f"train.py {' '.join(flags)} failed (exit {code}); see {log_path}")
    final = json.loads((directory / "metrics.json").read_text())
    row = {"train_seconds": round(seconds, 1), "eval_loss": final["eval_loss"], "eval_elbo": final.get("eval_elbo")}
    if num_samples:
        row.update(text_metrics.checkpoint_story_quality(str(directory / "final-model"), num_samples, threads=threads))
    cached.write_text(json.dumps(row))
    return row


def run_benchmark(argv: list[str], log_path: Path, threads: int | None) -> int:
    """One `python -m experiments.benchmark ARGV` in its own process, its output in `log_path`; returns its exit code."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    with open(log_path, "w") as log:
        return subprocess.call([sys.executable, "-m", "experiments.benchmark", *argv], cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, env=env)


def benchmark_failure(log_path: Path, what: str, code: int) -> UsageError:
    """The one-line error of a failed benchmark run: its own last `error:` line, and where its log is."""
    errors = [line for line in log_path.read_text().splitlines() if line.startswith("error: ")]
    return UsageError(f"the benchmark of {what} failed (exit {code}{': ' + errors[-1][7:] if errors else ''}); see {log_path}")
