"""Two CPU processes really train together through accelerate (gloo), with the loss at single-process scale."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts processes / a browser

ROOT = Path(__file__).resolve().parent.parent
RUN = [
    "--from-scratch", "--dataset-name", "builtin", "--max-train-samples", "400", "--max-eval-samples", "40",
    "--max-length", "32", "--line-by-line", "--vocab-size", "300", "--max-steps", "4", "--batch-size", "8",
    "--logging-steps", "1", "--eval-steps", "100", "--save-steps", "100", "--disable-tqdm", "true", "--seed", "3",
]


def first_loss(output_dir: Path) -> float:
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    return next(entry["loss"] for entry in state["log_history"] if "loss" in entry)


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def test_two_processes_train_together_on_cpu(tmp_path):
    launcher = str(Path(sys.executable).parent / "accelerate")
    # `--cpu --num_processes 2` silently starts one process in accelerate 1.x; --multi_gpu with gloo does not.
    two = subprocess.run(
        [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "train.py", *RUN, "--output-dir", str(tmp_path / "two"), "--use-cpu", "true"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    ranks = re.findall(r"process (\d) of world size (\d)", two.stderr)
    assert sorted(ranks) == [("0", "2"), ("1", "2")]
    assert two.stderr.count("final model written") == 1  # only rank 0 saves
    assert (tmp_path / "two" / "final-model" / "model.safetensors").is_file()

    one = subprocess.run([sys.executable, "train.py", *RUN, "--output-dir", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    ratio = first_loss(tmp_path / "two") / first_loss(tmp_path / "one")
    assert 0.8 < ratio < 1.25, ratio  # a loss multiplied by the world size would give about 2
