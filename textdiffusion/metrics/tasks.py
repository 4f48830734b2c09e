"""Offline lm-eval tasks built from held-out text (never the training split), as lm-eval task configs over local
JSON-lines files:

- cloze: LAMBADA-style. A passage's last word is the continuation of the passage before it; accuracy is whether
  greedy decoding writes exactly that word (lm-eval's `acc` of a loglikelihood task), perplexity its likelihood's.
  On the built-in stories the last word is the object the opening named: whether the model carries it to the end.
- choice: which of four endings (the passage's own last words, and three other passages' endings of the same
  word count) is the real one, by the log-likelihood of each (`acc`), and per character (`acc_norm`).
- carry (the built-in stories only): the story's last sentence, against three copies of it in which the opening's
  person, colour or object is replaced by another one of its kind: whether the model carries each to the end.

Passages: documents of a line-by-line text, or sentences of running text, of 8 to 60 words. A task given as
TASK=FILE reads a user's own JSON-lines file of the same fields instead (`check_task_file`).
"""

import json
import random
import re
from pathlib import Path

from textdiffusion.data import corpus
from textdiffusion.errors import SettingsError

TASKS = ("cloze", "choice", "carry")
STORY_TASKS = ("carry",)  # built from the built-in stories only
FIELDS = {"cloze": {"context": str, "continuation": str}, "choice": {"context": str, "choices": list, "label": int},
          "carry": {"context": str, "choices": list, "label": int}}
CHOICES = 4
ENDING_WORDS = 3  # the choice task's endings: a passage's last three words
MIN_WORDS, MAX_WORDS = 8, 60
SENTENCE = re.compile(r"[^.!?\n]+[.!?]")


def passages(documents: list[str], line_by_line: bool) -> list[str]:
    """Passages of MIN_WORDS to MAX_WORDS words: each document of a line-by-line text, or each sentence of running
    text (whitespace made single spaces)."""
    pieces = documents if line_by_line else [s for doc in documents for s in SENTENCE.findall(doc)]
    pieces = [" ".join(piece.split()) for piece in pieces]
    return [piece for piece in pieces if MIN_WORDS <= len(piece.split()) <= MAX_WORDS]


def cloze_docs(texts: list[str]) -> list[dict]:
    """{'context', 'continuation'}: the passage without its last word, and " " + that word (its trailing
    punctuation dropped: LAMBADA's targets are words)."""
    docs = []
    for text in texts:
        words = text.split()
        while words and not re.search(r"\w", words[-1]):  # a lone " ." after the last word
            words.pop()
        last = re.sub(r"[^\w'-]+$", "", words[-1]) if len(words) > 1 else ""
        if last:
            docs.append({"context": " ".join(words[:-1]), "continuation": f" {last}"})
    return docs


def choice_docs(texts: list[str], seed: int = 0) -> list[dict]:
    """{'context', 'choices', 'label'}: the passage without its last ENDING_WORDS words, four endings (its own and
    three drawn from other passages), and the index of its own."""
    rng = random.Random(seed)
    endings = [" " + " ".join(text.split()[-ENDING_WORDS:]) for text in texts]
    docs = []
    for index, text in enumerate(texts):
        others = sorted({e for e in endings if e != endings[index]})
        if len(others) < CHOICES - 1:
            continue
        choices = rng.sample(others, CHOICES - 1)
        label = rng.randrange(CHOICES)
        choices.insert(label, endings[index])
        docs.append({"context": " ".join(text.split()[:-ENDING_WORDS]), "choices": choices, "label": label})
    return docs


def carry_docs(stories: list[str], seed: int = 0) -> list[dict]:
    """{'context', 'choices', 'label'} of built-in stories: the story without its last sentence, and four last
    sentences: the real one and one each with the opening's person, colour and object (those the ending repeats)
    replaced by another of its kind that the story never names."""
    rng = random.Random(seed)
    docs = []
    for story in stories:
        sentences = [s.strip() + " ." for s in story.split(" .") if s.strip()]
        if len(sentences) < 2:
            continue
        opening, ending = sentences[0].split(), sentences[-1]
        named = set(story.split())
        swaps = []
        for kind in (corpus.NAMES, corpus.COLOURS, corpus.OBJECTS):
            value = next((word for word in opening if word in kind), None)
            if value and value in ending.split():
                other = rng.choice([v for v in kind if v not in named])
                swaps.append(" ".join(other if word == value else word for word in ending.split()))
        if len(swaps) < CHOICES - 1:
            continue
        label = rng.randrange(CHOICES)
        choices = swaps[: CHOICES - 1]
        choices.insert(label, ending)
        docs.append({"context": " ".join(sentences[:-1]), "choices": [f" {c}" for c in choices], "label": label})
    return docs


def write_task_files(documents: list[str], line_by_line: bool, directory, limit: int | None = None, seed: int = 0,
                     stories: bool = False) -> dict:
    """TASK -> the JSON-lines file of its documents, written into `directory` from held-out `documents`; with
    `stories` (the documents are built-in stories) the carry task's too."""
    texts = passages(documents, line_by_line)
    if len(texts) < CHOICES:
        raise SettingsError(f"the held-out text has {len(texts)} passages of {MIN_WORDS}-{MAX_WORDS} words; the tasks need at least {CHOICES}")
    rng = random.Random(seed)
    rng.shuffle(texts)
    texts = texts[:limit] if limit else texts
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    built = [("cloze", cloze_docs(texts)), ("choice", choice_docs(texts, seed))]
    if stories:
        built.append(("carry", carry_docs(texts, seed)))
    for task, docs in built:
        files[task] = directory / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
    return files


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """(task, its file or None) of a --tasks entry: TASK, built from the held-out text, or TASK=FILE."""
    task, _, path = spec.partition("=")
    if task not in TASKS:
        raise SettingsError(f"--tasks {task} is unknown; choose any of {', '.join(TASKS)} (or TASK=FILE.jsonl)")
    if _ and not Path(path).is_file():
        raise SettingsError(f"--tasks {spec}: no such file {path}")
    return task, Path(path) if _ else None


def check_task_file(task: str, path) -> int:
    """The number of documents of a JSON-lines task file, each checked for its task's FIELDS (and, for choice, a
    label that indexes its choices); the first bad line is a SettingsError naming the file, the line and the field."""
    need = FIELDS[task]
    count = 0
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"task file {path} line {number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise SettingsError(f"{where} is not JSON ({err.msg})") from None
        if not isinstance(doc, dict):
            raise SettingsError(f"{where}: an object with {', '.join(need)} is expected")
        for name, kind in need.items():
            if name not in doc:
                raise SettingsError(f"{where}: the field {name!r} is missing (a {task} line needs {', '.join(need)})")
            if not isinstance(doc[name], kind) or isinstance(doc[name], bool):
                raise SettingsError(f"{where}: {name!r} must be a {kind.__name__}, not {type(doc[name]).__name__}")
        if task == "choice" and not 0 <= doc["label"] < len(doc["choices"]):
            raise SettingsError(f"{where}: label {doc['label']} is not an index of its {len(doc['choices'])} choices")
        count += 1
    if not count:
        raise SettingsError(f"task file {path} has no documents")
    return count


def task_config(task: str, path, name_prefix: str = "textdiffusion") -> dict:
    """The lm-eval task config (a dict, as lm_eval.simple_evaluate takes) of TASK over its file."""
    if task not in TASKS:
        raise SettingsError(f"task {task!r} is unknown; choose any of {', '.join(TASKS)}")
    common = {"task": f"{name_prefix}_{task}", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
              "test_split": "test", "doc_to_text": "{{context}}"}
    if task == "cloze":
        return {**common, "output_type": "loglikelihood", "doc_to_target": "{{continuation}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False}]}
    # choice and carry
    return {**common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
