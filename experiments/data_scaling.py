"""Does train.py's data path scale? Data preparation and the first training steps on corpora of 1x, 4x and 16x a
base size, prepared (cached on disk) and streamed.

    python -m experiments.data_scaling                                  # 25 MB base: 25, 100, 400 MB (reads ../shared/data)
    python -m experiments.data_scaling --base-mb 1 --sizes 1 4 --max-steps 10

The corpora are the shared corpora's text concatenated and repeated until each size is reached (a 2-core CPU has
nowhere near 400 MB of distinct text to hand; repeats make the tokenizer's vocabulary the same at every size,
which is what a timing of the data path wants). Each cell runs `train.py --from-scratch --train-file CORPUS
--validation-file HELD_OUT --max-steps N --eval-strategy no` as a user would, in its own process:
- cached, cold: a fresh datasets cache (tokenizer trained, text read, tokenized and packed into the cache);
- cached, warm: the same command again (the tokenizer is trained again; the text's rows, tokens and blocks come
  from the cache);
- streamed: `--streaming` (tokenizer from the first 16M characters, blocks packed as training reads them).
Reported per cell: seconds until the data is ready (train.py's log line), the training steps' seconds (the
Trainer's train_runtime), the whole command's seconds (with start-up and a final evaluation), the peak
resident memory (`ru_maxrss`) and the peak anonymous memory (RssAnon sampled every 0.1 s: resident memory less the
pages mapped from files, which the datasets cache's memory maps bring in and the OS can drop). Writes
data_scaling.csv and .md into --output-dir; corpora are built once.
"""

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import real_corpora, tables
from textdiffusion import cli

ROOT = Path(__file__).resolve().parents[1]
MODES = ("cached-cold", "cached-warm", "streamed")
SOURCES = ("shakespeare", "warandpeace-char", "tinystories", "wikitext2")
READY = re.compile(r"\(data ready in ([0-9.]+) s\)")
TRAINING = re.compile(r"'train_runtime': '([0-9.]+)'")


@dataclass
class ScalingArguments:
    base_mb: float = field(default=25.0, metadata={"help": "Size of the 1x corpus in MB (of UTF-8 text)."})
    sizes: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={"help": "Corpus sizes, in multiples of --base-mb."})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={"help": f"Any of {', '.join(MODES)}."})
    max_steps: int = field(default=50, metadata={"help": "Training steps of each run."})
    threads: int | None = field(default=None, metadata={"help": "torch threads per run. Default: torch's own."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the shared corpora."})
    output_dir: str = field(default="runs/data_scaling", metadata={"help": "Corpora, runs, datasets caches and the table."})


def build_corpus(path: Path, megabytes: float, data_dir: str) -> Path:
    """PATH: the shared corpora's text, concatenated and repeated to `megabytes` MB (cut at a line end)."""
    if path.is_file():
        return path
    texts = [real_corpora.source_files(name, data_dir)[0].read_text(encoding="utf-8").strip() + "\n\n" for name in SOURCES]
    left = int(megabytes * 1e6)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        while left > 0:
            for text in texts:
                data = text.encode()
                if len(data) > left:  # the last piece: up to its last line end within what is left
                    data = data[:left]
                    data = data[: data.rfind(b"\n") + 1] or data
                    handle.write(data.decode(errors="ignore"))
                    left = 0
                    break
                handle.write(text)
                left -= len(data)
    os.replace(tmp, path)
    return path


def peak_anonymous_memory(pid: int, stop: threading.Event, peak: list) -> None:
    """Sample /proc/PID/status's RssAnon (kB) until `stop`; the largest lands in peak[0]."""
    while not stop.is_set():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
            peak[0] = max(peak[0], int(re.search(r"RssAnon:\s+(\d+)", text).group(1)))
        except (OSError, AttributeError):
            pass
        stop.wait(0.1)


def run_cell(args, corpus: Path, held_out: Path, mode: str, size: int) -> dict:
    out = Path(args.output_dir)
    run_dir = out / "runs" / f"{size}x-{mode}"
    cache = out / "caches" / f"{size}x"  # cold empties it first; warm reuses the one cold filled
    if mode == "cached-cold":
        subprocess.run(["rm", "-rf", str(cache)], check=True)
    flags = ["--from-scratch", "--train-file", str(corpus), "--validation-file", str(held_out), "--max-steps",
             str(args.max_steps), "--eval-strategy", "no", "--save-strategy", "no", "--logging-steps", str(args.max_steps),
             "--overwrite-output-dir", "--output-dir", str(run_dir), *(["--streaming"] if mode == "streamed" else [])]
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache.resolve() if mode != "streamed" else (out / "caches" / "streamed").resolve()),
               **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    log = run_dir.with_name(f"{run_dir.name}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "train.py", *flags], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=peak_anonymous_memory, args=(process.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        stop.set()
        sampler.join()
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise cli.UsageError(f"train.py failed for {size}x {mode}; see {log}")
    ready, training = READY.search(text), TRAINING.search(text)
    return {"size": size, "megabytes": round(corpus.stat().st_size / 1e6, 1), "mode": mode,
            "data_ready_s": float(ready.group(1)) if ready else None,
            "training_s": float(training.group(1)) if training else None, "total_s": round(seconds, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "peak_anon_mb": round(peak[0] / 1024)}


def main(argv=None):
    (args,) = cli.parse(cli.parser_for((ScalingArguments,), __doc__.splitlines()[0]), argv)
    cli.log_to_stderr()
    if not args.base_mb > 0:
        raise cli.UsageError(f"--base-mb {args.base_mb} must be > 0")
    if not args.sizes or min(args.sizes) < 1:
        raise cli.UsageError(f"--sizes {' '.join(map(str, args.sizes))}: each must be 1 or more")
    if unknown := [mode for mode in args.modes if mode not in MODES]:
        raise cli.UsageError(f"--modes {unknown[0]} is unknown; choose any of {', '.join(MODES)}")
    if args.max_steps < 1:
        raise cli.UsageError(f"--max-steps {args.max_steps} must be 1 or more")
    out = Path(args.output_dir)
    held_out = out / "corpora" / "held_out.txt"  # 100 KB of WikiText-2's test text: a short final evaluation
    held_out.parent.mkdir(parents=True, exist_ok=True)
    held_out.write_text(real_corpora.source_files("wikitext2", args.data_dir)[1].read_text(encoding="utf-8")[:100_000])
    rows = []
    for size in args.sizes:
        corpus = build_corpus(out / "corpora" / f"{size}x.txt", args.base_mb * size, args.data_dir)
        for mode in [m for m in MODES if m in args.modes]:
            rows.append(run_cell(args, corpus, held_out, mode, size))
            print(rows[-1], flush=True)
    columns = ["size", "megabytes", "mode", "data_ready_s", "training_s", "total_s", "peak_rss_mb", "peak_anon_mb"]
    tables.write_csv(out / "data_scaling.csv", rows, columns)
    table = tables.markdown_table(rows, columns)
    (out / "data_scaling.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    cli.run(main)
