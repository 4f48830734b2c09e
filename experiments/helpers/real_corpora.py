"""The real-text corpora of the benchmarks: where each one's training and held-out text come from, and the
training settings that suit it (the one place a per-dataset default is set; a flag the user gives wins).

BPE settings are the benchmark's own. The character-level ones are nanoGPT's CPU configuration of
train_shakespeare_char (block 64, batch 12, 2000 iterations, 100 warm-up steps; its learning rate 1e-3 and no dropout
are the benchmark's for every corpus, its 4 layers, 4 heads and width 128 are --model-size tiny), at which nanoGPT's
README reports a validation loss of 1.88 nats per character.
"""

from dataclasses import dataclass, field
from pathlib import Path

from textdiffusion.cli import UsageError

TRAIN_PERCENT = 90  # a corpus without a split: the first 90% of its characters train, the last 10% are held out

BPE = {"tokenizer_type": "bpe", "max_length": 128, "batch_size": 32, "max_steps": 1000, "warmup_steps": 30}
CHAR = {"tokenizer_type": "char", "max_length": 64, "batch_size": 12, "max_steps": 2000, "warmup_steps": 100}


@dataclass(frozen=True)
class Corpus:
    train: str  # path under the data folder
    test: str | None  # None: the last 10% of `train` is held out
    defaults: dict
    description: str
    reference: dict = field(default_factory=dict)  # steps -> a published AR validation loss (nats per token)


DATASETS = {
    "shakespeare": Corpus("tinyshakespeare/input.txt", None, BPE, "Tiny Shakespeare, BPE, 90/10 split"),
    "wikitext2": Corpus("wikitext-2-raw/wiki.valid.raw", "wikitext-2-raw/wiki.test.raw", BPE,
                        "WikiText-2, BPE, train on wiki.valid.raw, test on wiki.test.raw"),
    # nanoGPT's README, CPU run of train_shakespeare_char: "a loss of only 1.88" after its 2000 iterations.
    "shakespeare-char": Corpus("tinyshakespeare/input.txt", None, CHAR, "Tiny Shakespeare, characters, 90/10 split",
                               reference={2000: 1.88}),
    "warandpeace-char": Corpus("warandpeace/input.txt", None, CHAR, "War and Peace, characters, 90/10 split"),
    "tinystories": Corpus("tinystories/tinystories_sample_2MiB.txt", None, BPE, "TinyStories 2 MiB sample, BPE, 90/10 split"),
    "simple": Corpus("simple/simple-train.txt", "simple/simple-test.txt", BPE,
                     "minimal-text-diffusion's simple sentences, one per line"),
}


def default_help(key: str) -> str:
    """'Default per --dataset: 128 for shakespeare, wikitext2; 64 for ...', read from DATASETS."""
    by_value: dict = {}
    for name, corpus in DATASETS.items():
        by_value.setdefault(corpus.defaults[key], []).append(name)
    return "Default per --dataset: " + "; ".join(f"{value} for {', '.join(names)}" for value, names in by_value.items()) + "."


def source_files(name: str, data_dir: str) -> tuple[Path, Path | None]:
    """The corpus's files under `data_dir`, checked to exist: (training text, held-out text or None)."""
    if name not in DATASETS:
        raise UsageError(f"--dataset {name} is unknown; choose one of {', '.join(DATASETS)}")
    corpus = DATASETS[name]
    files = (Path(data_dir) / corpus.train, Path(data_dir) / corpus.test if corpus.test else None)
    for path in files:
        if path is not None and not path.is_file():
            raise UsageError(f"--data-dir {data_dir}: {path} not found")
    return files


def split_files(name: str, data_dir: str, out: Path) -> tuple[Path, Path]:
    """(training file, held-out file); a corpus without a split is cut by characters into `out`/data/."""
    train, test = source_files(name, data_dir)
    if test is not None:
        return train, test
    text = train.read_text(encoding="utf-8")
    cut = len(text) * TRAIN_PERCENT // 100
    train, test = out / "data" / "train.txt", out / "data" / "test.txt"
    train.parent.mkdir(parents=True, exist_ok=True)
    train.write_text(text[:cut], encoding="utf-8")
    test.write_text(text[cut:], encoding="utf-8")
    return train, test
