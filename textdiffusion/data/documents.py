"""Training and validation text: local files, the built-in corpus, hub datasets; all offline but the hub.

Local files and hub datasets become `datasets` datasets of text rows (`text`, and `ends`: whether the row ends a
document), written to the datasets cache in bounded pieces and memory mapped, so no corpus is held in Python lists;
with `streaming` the training rows are read lazily instead (an `IterableDataset`). A text file packed as one
document is cut into rows only where its tokenization cannot change (see `safe_cut`). The built-in corpus
(`corpus.py`, small) stays a list of stories.
"""

import codecs
import hashlib
import json
import logging
import re
from pathlib import Path

from textdiffusion.data import corpus
from textdiffusion.errors import SettingsError

logger = logging.getLogger(__name__)

BUILTIN = "builtin"  # the variable-layout stories; "builtin-fixed" the older fixed-layout ones

BUILTIN_LAYOUTS = {BUILTIN: "variable", f"{BUILTIN}-fixed": "fixed"}

BUILTIN_TRAIN_STORIES = 20000

BUILTIN_EVAL_SEED = 1  # validation stories come from another seed than training (seed 0)

ROW_CHARS = 1 << 15  # about this many characters per row of a text file packed as one document

TEXT_ROWS_VERSION = "2"  # part of the cache fingerprint: bump when the rows a file gives change


def read_documents(path: str, line_by_line: bool) -> list[str]:
    """Documents from a .txt (whole file, or one per non-empty line) or .jsonl ('text' field) file, as a list
    (small files: evaluation text, benchmarks' vocabularies); training reads files with `text_dataset`."""
    shape = scan_file(path, line_by_line)
    docs = [row["text"] for row in text_rows(path, line_by_line, 0, shape["size"], shape["lead"])]
    return ["".join(docs)] if shape["packed"] else docs


def scan_file(path: str, line_by_line: bool) -> dict:
    """One bounded pass over a text file that checks it (exists, UTF-8, JSON lines with a 'text' field, any text)
    and measures it: packed (one document: a .txt read whole) or not, its size (characters of the stripped
    document, or number of documents) and, for one document, its leading whitespace to skip."""
    file = Path(path)
    if not file.is_file():
        raise SettingsError(f"training/validation file not found: {path}")
    jsonl, packed = file.suffix == ".jsonl", file.suffix != ".jsonl" and not line_by_line
    decoder, offset, chars, lead, last, docs = codecs.getincrementaldecoder("utf-8")(), 0, 0, None, 0, 0
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as err:
                raise SettingsError(f"{path} is not UTF-8 text (byte {offset + err.start}); convert it, e.g. iconv -t utf-8") from None
            offset += len(raw)
            if jsonl:
                docs += bool(line.strip()) and bool(_json_text(line, path, number).strip())
            elif line_by_line:
                docs += sum(1 for doc in _universal(line).splitlines() if doc.strip())
            else:
                line = _universal(line)
                stripped = line.lstrip()
                if lead is None and stripped:
                    lead = chars + len(line) - len(stripped)
                if line.strip():
                    last = chars + len(line.rstrip())
                chars += len(line)
    if (lead is None) if packed else not docs:
        raise SettingsError(f"{path} contains no text")
    return {"packed": packed, "size": last - lead if packed else docs, "lead": lead or 0}


def _universal(line: str) -> str:
    """A line read in binary as Python's text mode reads it (universal newlines)."""
    return line.replace("\r\n", "\n").replace("\r", "\n")


def _json_text(line: str, path: str, number: int) -> str:
    try:
        text = json.loads(line)["text"]
    except (json.JSONDecodeError, KeyError, TypeError):
        text = None
    if not isinstance(text, str):
        raise SettingsError(f"{path} line {number}: expected a JSON object with a 'text' field") from None
    return text


# Where text packed as one document may be cut into rows without changing its tokens: after a newline or before a
# single space, each between two non-space characters. Byte-level BPE (GPT-2's pre-tokenizer), WordPiece, word and
# character tokenizers all split there anyway, so the rows' tokens joined are the whole text's.
SAFE_CUT = re.compile(r"\S\n(?=\S)|\S(?= \S)")


def safe_cut(text: str) -> int:
    """The last position (0: none) at which `text` may be cut without changing its tokens."""
    window = max(0, len(text) - 4096)
    while True:
        matches = list(SAFE_CUT.finditer(text, window))
        if matches or window == 0:
            return matches[-1].end() if matches else 0
        window = max(0, window - 65536)


def text_rows(path: str, line_by_line: bool, start: int, stop: int, lead: int = 0):
    """Rows {'text', 'ends'} of a text file: documents `start` to `stop` (one per line, or per JSON line), or, for
    a file packed as one document, its characters `start` to `stop` (after `lead` leading whitespace) in rows of
    about ROW_CHARS cut where tokens cannot change; only the document's last row ends it."""
    jsonl = path.endswith(".jsonl")
    with open(path, encoding="utf-8") as handle:
        if jsonl or line_by_line:
            index = 0
            for number, line in enumerate(handle, 1):
                for doc in ([_json_text(line, path, number)] if jsonl and line.strip() else [] if jsonl else line.splitlines()):
                    if (doc := doc.strip()) and start <= index < stop:
                        yield {"text": doc, "ends": True}
                    index += bool(doc)
                if index >= stop:
                    return
            return
        skip = lead + start  # characters, in text mode
        while skip > 0:
            piece = handle.read(min(skip, 1 << 24))
            if not piece:
                break
            skip -= len(piece)
        left, buffer = stop - start, ""
        while left > 0 or buffer:
            piece = handle.read(min(ROW_CHARS, left)) if left > 0 else ""
            left -= len(piece)
            buffer += piece
            if left <= 0:
                yield {"text": buffer, "ends": True}
                return
            cut = safe_cut(buffer) if len(buffer) >= ROW_CHARS else 0
            if cut or len(buffer) >= 16 * ROW_CHARS:  # no safe cut in 16 rows: not running text; cut anyway
                cut = cut or len(buffer)
                yield {"text": buffer[:cut], "ends": False}
                buffer = buffer[cut:]


def text_dataset(path: str, line_by_line: bool, part: tuple[int, int] | None = None, shape: dict | None = None):
    """A memory-mapped `datasets.Dataset` of `text_rows` (all of the file, or `part`, a range of documents or of
    characters), cached by the file's path, size and modification time."""
    import datasets

    shape = shape or scan_file(path, line_by_line)
    start, stop = part or (0, shape["size"])
    stat = Path(path).stat()
    key = json.dumps([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, line_by_line, start, stop,
                      ROW_CHARS, TEXT_ROWS_VERSION])
    features = datasets.Features({"text": datasets.Value("string"), "ends": datasets.Value("bool")})
    return datasets.Dataset.from_generator(
        text_rows, features=features, fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32], writer_batch_size=256,
        gen_kwargs={"path": str(path), "line_by_line": line_by_line, "start": start, "stop": stop, "lead": shape["lead"]},
    )


TOKENIZER_SAMPLE_CHARS = 16_000_000  # --streaming: a new tokenizer learns from this much of the training text


def leading_text(rows, chars: int = TOKENIZER_SAMPLE_CHARS) -> list[str]:
    """The texts of the first rows of a (streamed) dataset, about `chars` characters in all."""
    texts, total = [], 0
    for row in rows:
        texts.append(row["text"])
        total += len(row["text"])
        if total >= chars:
            break
    return texts


def split_for_validation(size: int, percentage: int, packed: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """(train, validation) ranges that hold out the last `percentage` % of a file's documents, or of its
    characters for a single document."""
    if packed:
        cut = size * (100 - percentage) // 100
        return (0, cut), (cut, size)
    cut = max(1, size * (100 - percentage) // 100)
    return (0, cut), (cut, size) if cut < size else (size - 1, size)


def load_documents(data_args, streaming: bool = False):
    """(train, validation) text: lists of stories for the built-in corpus; `datasets` datasets of text rows for
    files and hub datasets (with `streaming`, the training rows are an IterableDataset)."""
    if data_args.train_file:
        train, valid = _file_documents(data_args, streaming)
    elif data_args.dataset_name in BUILTIN_LAYOUTS:
        layout = BUILTIN_LAYOUTS[data_args.dataset_name]
        train = corpus.generate_corpus(data_args.max_train_samples or BUILTIN_TRAIN_STORIES, seed=0, layout=layout)
        valid = corpus.generate_corpus(data_args.max_eval_samples or 500, seed=BUILTIN_EVAL_SEED, layout=layout)
    else:
        train, valid = _hub_documents(data_args, streaming)
    return first(train, data_args.max_train_samples), first(valid, data_args.max_eval_samples)


def first(docs, count: int | None):
    """The first `count` documents (rows) of a list or a dataset; a file packed as one document stays whole."""
    if not count:
        return docs
    if isinstance(docs, list):
        return docs[:count]
    if not hasattr(docs, "__len__"):  # streaming
        return docs.take(count)
    if len(docs) <= count or not docs[0]["ends"]:  # rows of one document (a packed file or hub text): kept whole
        return docs
    return docs.select(range(count))


def _file_documents(data_args, streaming: bool):
    path, line_by_line = data_args.train_file, data_args.line_by_line
    shape = scan_file(path, line_by_line)
    if data_args.validation_file:
        train_part = (0, shape["size"])
        valid = text_dataset(data_args.validation_file, line_by_line)
    elif streaming:
        raise SettingsError("--streaming needs --validation-file (a streamed file is not split for validation)")
    else:
        train_part, valid_part = split_for_validation(shape["size"], data_args.validation_split_percentage, shape["packed"])
        valid = text_dataset(path, line_by_line, valid_part, shape)
    if streaming:
        import datasets

        train = datasets.IterableDataset.from_generator(text_rows, gen_kwargs={
            "path": str(path), "line_by_line": line_by_line, "start": train_part[0], "stop": train_part[1], "lead": shape["lead"]})
    else:
        train = text_dataset(path, line_by_line, train_part, shape)
    return train, valid


def _hub_documents(data_args, streaming: bool):
    import datasets

    try:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config)
        train_stream = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config, split="train", streaming=True) if streaming else None
    except Exception as err:  # datasets raises many types when offline; all mean the same to the user
        raise SettingsError(
            f"could not load dataset '{data_args.dataset_name}' ({type(err).__name__}); offline? "
            "use quick_test, dataset_name builtin, or train_file FILE"
        ) from None
    column = "text" if "text" in raw["train"].column_names else raw["train"].column_names[0]
    valid_split = "validation" if "validation" in raw else "test" if "test" in raw else None

    def rows(split):
        if data_args.line_by_line:  # one document per non-empty row
            return split.filter(lambda batch: [bool(t.strip()) for t in batch[column]], batched=True).map(
                lambda batch: {"text": [t.strip() for t in batch[column]], "ends": [True] * len(batch[column])},
                batched=True, remove_columns=split.column_names)
        # Hub text datasets are usually one line per row; packed, they are one running text (rows joined by "\n").
        return split.map(lambda batch: {"text": [t + "\n" for t in batch[column]], "ends": [False] * len(batch[column])},
                         batched=True, remove_columns=split.column_names)

    train = rows(train_stream if streaming else raw["train"])
    if valid_split:
        valid = rows(raw[valid_split])
    elif streaming:
        raise SettingsError(f"--streaming needs a validation split; '{data_args.dataset_name}' has none")
    else:
        n = len(train)
        (a, b), (c, d) = split_for_validation(n, data_args.validation_split_percentage, packed=False)
        train, valid = train.select(range(a, b)), train.select(range(c, d))
    return train, valid
