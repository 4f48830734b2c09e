"""Every command of the original text-diffusion README, adapted to this toolkit, run in order.

    python -m experiments.readme_commands                          # the real quick-test models (about 6 minutes)
    python -m experiments.readme_commands --train-flags "--max-steps 4"   # a smoke run of the same commands

The seed project's README (../shared/seeds/text-diffusion-README.md: Quick Start, Visualizing, Compare,
Experiments to Try) is the list below, with its paths adapted: `results-full/final-model` is our quick-test model
`results/final-model`, the hub's `gpt2` is the matched GPT-2 of `train.py --quick-test --objective ar`, and its
`results/checkpoint-1000` is `results/checkpoint-800` (the quick-test saves every 400 steps). Its
`python3 -m http.server 8000` is not needed: view_animation.html opens from the file system.

The commands run in --workdir (default runs/readme_commands, so the repository's own results/ is left alone), each
as a subprocess with this Python, exactly as printed. Prints one row per command (exit code, seconds) and exits
non-zero when any command failed; each command's output is in WORKDIR/logs/NN.log.
"""

import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import tables
from textdiffusion import cli
from textdiffusion.cli import UsageError

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent

TRAIN = ["python train.py --quick-test", "python train.py --quick-test --objective ar"]
COMMANDS = [
    # Quick Start
    "python generate.py --checkpoint results/final-model",
    'python visualize_generation.py --checkpoint results/final-model --prefix "Machine learning is" --max-length 50',
    # Visualizing: the full model's commands, on the quick-test model
    'python visualize_generation.py --checkpoint results/final-model --prefix "Your prompt here" --max-length 50',
    'python visualize_generation.py --checkpoint results/final-model --prefix "The future of AI" --max-length 50 '
    "--sampling topk --temperature 0.8",
    # Compare with GPT-2
    "python compare_models.py --roberta-checkpoint results/final-model --gpt2-checkpoint results-ar/final-model "
    '--prompt "Machine learning is" --max-length 50 --output comparison.gif',
    # Experiments to Try
    "python generate.py --schedule linear",
    "python generate.py --schedule cosine",
    "python generate.py --schedule exponential",
    "python generate.py --sampling greedy",
    "python generate.py --sampling topk --k 50",
    "python generate.py --sampling nucleus --p 0.9",
    "python generate.py --temperature 0.7",
    "python experiments/layer_analysis.py --checkpoint results/checkpoint-800",
    "python experiments/masking_viz.py",
]


@dataclass
class ReadmeArguments:
    workdir: str = field(default="runs/readme_commands", metadata={"help": "Where the commands run (their results/ and results-ar/ go here)."})
    train_flags: str = field(default="", metadata={"help": "Flags added to the two train.py commands (e.g. \"--max-steps 4\" for a smoke run)."})
    skip_training: bool = field(default=False, metadata={"help": "Use the models already in WORKDIR/results and WORKDIR/results-ar."})


def commands(train_flags: str = "", skip_training: bool = False) -> list[str]:
    """The README's commands in order, the two training commands first (with `train_flags` added)."""
    train = [] if skip_training else [f"{command} {train_flags}".strip() for command in TRAIN]
    if train_flags:  # a shortened run saves no checkpoint-800; its final model stands in for it
        return train + [command.replace("results/checkpoint-800", "results/final-model") for command in COMMANDS]
    return train + COMMANDS


def run(command: str, workdir: Path, log_path: Path) -> tuple[int, float]:
    """Run one README command (`python X ...` with X resolved in this repository) in `workdir`; (exit code, seconds)."""
    words = shlex.split(command)
    argv = [sys.executable, str(ROOT / words[1]), *words[2:]]
    began = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    return code, time.perf_counter() - began


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(ReadmeArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    workdir = Path(args.workdir)
    if args.skip_training and not (workdir / "results" / "final-model").is_dir():
        raise UsageError(f"--skip-training: {workdir / 'results' / 'final-model'} does not exist; run once without it")
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    rows = []
    for number, command in enumerate(commands(args.train_flags, args.skip_training), 1):
        log_path = workdir / "logs" / f"{number:02d}.log"
        logger.info("%d. %s", number, command)
        code, seconds = run(command, workdir, log_path)
        rows.append({"command": command, "exit": code, "seconds": round(seconds, 1), "log": str(log_path)})
        if code != 0:
            logger.error("exit %d; the last lines of %s:\n%s", code, log_path, "\n".join(log_path.read_text().splitlines()[-5:]))
    print(tables.markdown_table(rows, ["command", "exit", "seconds"], lambda c, v: f"`{v}`" if c == "command" else str(v)))
    failed = [row for row in rows if row["exit"] != 0]
    print(f"{len(rows) - len(failed)} of {len(rows)} commands ran (exit 0)")
    if failed:
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    cli.run(main)
