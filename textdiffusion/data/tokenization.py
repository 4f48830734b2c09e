"""Tokenizers and tokenised blocks: trained offline with `tokenizers`, or loaded from a checkpoint or the hub.

Every tokenizer here has RoBERTa's special tokens (<s> <pad> </s> <unk> <mask>); the helpers below find the
start, end and special ids of any hub tokenizer too (BERT's [CLS]/[SEP] included).
"""

import functools
import json
import os
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from textdiffusion.errors import SettingsError

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(texts: list[str], kind: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A RoBERTa-style tokenizer (<s> <pad> </s> <unk> <mask>) trained on `texts` with `tokenizers`."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decoding joins words with one space
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    elif kind == "char":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    else:
        raise SettingsError(f"unknown tokenizer type '{kind}'; choose bpe, word or char")
    tok.train_from_iterator(text_batches(texts), trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    mask_takes_leading_space(tokenizer)
    return tokenizer


# Pre-tokenizers that carry a word's leading space inside its first piece ("Ġcat", "▁cat").
LEADING_SPACE_PRE_TOKENIZERS = {"ByteLevel", "Metaspace"}


def mask_takes_leading_space(tokenizer) -> bool:
    """Make the mask token absorb the space before it (lstrip, as RoBERTa's hub tokenizer does) when `tokenizer`
    puts spaces inside pieces: "the <mask> ." then reads `Ġthe <mask> Ġ.` and the predicted piece brings its own
    space, instead of a stray `Ġ` piece before the mask and a double space in the filled text. Ids are unchanged.
    Returns whether the tokenizer has that convention (a WordPiece, word or character tokenizer has not)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.mask_token is None:
        return False
    if not _pre_tokenizer_kinds(json.loads(backend.to_str()).get("pre_tokenizer")) & LEADING_SPACE_PRE_TOKENIZERS:
        return False
    current = tokenizer.added_tokens_decoder.get(tokenizer.mask_token_id)
    if current is None or not current.lstrip:
        tokenizer.add_special_tokens(
            {"mask_token": AddedToken(tokenizer.mask_token, lstrip=True, rstrip=False, normalized=False, special=True)}
        )
    return True


def _pre_tokenizer_kinds(node) -> set[str]:
    """The types of a serialised pre-tokenizer and of those a Sequence of them holds."""
    if not isinstance(node, dict):
        return set()
    return {node.get("type")}.union(*(_pre_tokenizer_kinds(child) for child in node.get("pretokenizers", [])))


# What transformers 5 writes as tokenizer_class for a tokenizer read from tokenizer.json alone, and the name of the
# same class that transformers 4 also reads (transformers 5 keeps it as an alias).
BACKEND_CLASS, PORTABLE_CLASS = "TokenizersBackend", "PreTrainedTokenizerFast"


def make_tokenizer_config_portable(directory) -> bool:
    """Rewrite DIRECTORY/tokenizer_config.json's tokenizer_class TokenizersBackend (which transformers 4 cannot
    read) as PreTrainedTokenizerFast, which both 4.x and 5.x load from tokenizer.json. Returns whether it changed."""
    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return False
    settings = json.loads(path.read_text(encoding="utf-8"))
    if settings.get("tokenizer_class") != BACKEND_CLASS:
        return False
    settings["tokenizer_class"] = PORTABLE_CLASS
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return True


def start_token_id(tokenizer) -> int:
    return tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id


def end_token_id(tokenizer) -> int:
    return tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id


def special_token_ids(tokenizer) -> list[int]:
    """Ids that never belong inside generated text."""
    return sorted({i for i in tokenizer.all_special_ids if i is not None})


def is_character_level(tokenizer) -> bool:
    """Whether every token other than the special ones is one character (`--tokenizer-type char`)."""
    special = set(tokenizer.all_special_tokens)
    text_tokens = [token for token in tokenizer.get_vocab() if token not in special]
    return bool(text_tokens) and all(len(token) == 1 for token in text_tokens)


def load_tokenizer(name_or_path: str, need_mask: bool = True, trust_remote_code: bool = False):
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise SettingsError(unreachable_message(name_or_path, err)) from None
    # transformers 5, offline, can return a tokenizer with only its special tokens for an uncached hub name.
    if len(tokenizer) < 32:
        raise SettingsError(
            f"the tokenizer of '{name_or_path}' has only {len(tokenizer)} tokens (not downloaded? offline?); "
            "use quick_test or a local checkpoint directory"
        )
    if need_mask and tokenizer.mask_token_id is None:
        raise SettingsError(f"the tokenizer of '{name_or_path}' has no mask token; a masked-diffusion model needs one")
    mask_takes_leading_space(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    return tokenizer


def unreachable_message(name: str, err: Exception) -> str:
    if os.path.sep in name or name.startswith(".") or Path(name).exists():
        return f"cannot load '{name}': {str(err).splitlines()[0]}"
    return (
        f"cannot load '{name}' from the hub (offline or not a model name); "
        "use --quick-test, or --from-scratch with --train-file FILE, or a local checkpoint directory"
    )


def tokenize_documents(tokenizer, docs, max_length: int, line_by_line: bool, desc: str = "tokenize", num_proc: int | None = None):
    """A `datasets.Dataset` of equal-length `input_ids` rows (an IterableDataset for streamed rows).

    line_by_line: `<s> document </s> </s> ...` up to max_length; the trailing end tokens are training targets.
    packed: documents joined by the end token and cut into blocks that each start with `<s>`.
    `docs`: a list of documents (tokenized in memory), or a dataset of text rows (`data.documents`: `text`, and
    `ends` where a row ends its document), tokenized and packed in bounded batches into the datasets cache.
    """
    import datasets

    start, end = start_token_id(tokenizer), end_token_id(tokenizer)
    if isinstance(docs, datasets.IterableDataset):
        return datasets.IterableDataset.from_generator(
            _streamed_blocks, gen_kwargs={"rows": docs, "tokenizer": tokenizer, "max_length": max_length,
                                          "line_by_line": line_by_line})
    if not isinstance(docs, list):
        return _dataset_blocks(tokenizer, docs, max_length, line_by_line, desc, num_proc)
    raw = datasets.Dataset.from_dict({"text": docs})

    def encode(batch):
        return {"ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"]}

    encoded = raw.map(encode, batched=True, remove_columns=["text"], desc=desc)
    if line_by_line:

        def fill(batch):
            return {"input_ids": [filled(ids, start, end, max_length) for ids in batch["ids"]]}

        return encoded.map(fill, batched=True, remove_columns=["ids"], desc="fill to max length")

    def pack(batch):
        stream = []
        for ids in batch["ids"]:
            stream.extend(ids + [end])
        block = max_length - 1
        return {"input_ids": [[start] + stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]}

    # One batch for all documents, so no text is lost at batch borders of the packing.
    packed = encoded.map(pack, batched=True, batch_size=None, remove_columns=["ids"], desc="pack blocks")
    if len(packed) == 0:
        total = sum(len(ids) + 1 for ids in encoded["ids"])
        raise SettingsError(f"the text has {total} tokens, fewer than one block of max_length {max_length}")
    return packed


def filled(ids: list[int], start: int, end: int, max_length: int) -> list[int]:
    """One line-by-line row: `<s> document </s>` cut to max_length, filled with end tokens."""
    ids = [start] + ids[: max_length - 2] + [end]
    return ids + [end] * (max_length - len(ids))


def blocks_of(batches, start: int, end: int, max_length: int, line_by_line: bool):
    """Rows {'input_ids'} from batches {'ids', 'ends'} of tokenized text rows, in order: each row filled
    (line by line), or the running text packed into blocks, a document's end token after its last row; a
    remainder shorter than a block at the end is dropped."""
    block, stream = max_length - 1, []
    for batch in batches:
        for ids, ends in zip(batch["ids"], batch["ends"]):
            if line_by_line:
                yield {"input_ids": filled(ids, start, end, max_length)}
                continue
            stream.extend(ids)
            if ends:
                stream.append(end)
            cut = len(stream) - len(stream) % block
            for i in range(0, cut, block):
                yield {"input_ids": [start] + stream[i : i + block]}
            del stream[:cut]


def _dataset_blocks(tokenizer, rows, max_length, line_by_line, desc, num_proc):
    """tokenize_documents of a dataset of text rows: tokenized in bounded batches (`num_proc` processes), then
    filled or packed by a generator, each step cached on disk (a second run of the same text and tokenizer reads
    the cache) and memory mapped."""
    import datasets

    def encode(batch):
        return {"ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"], "ends": batch["ends"]}

    # Rows of a packed text are long (documents.ROW_CHARS characters): a few at a time keeps memory bounded.
    per_batch = 1000 if line_by_line else 16
    ids = datasets.Sequence(datasets.Value("int32"))
    encoded = rows.map(encode, batched=True, batch_size=per_batch, writer_batch_size=per_batch, num_proc=num_proc,
                       remove_columns=rows.column_names, features=datasets.Features({"ids": ids, "ends": datasets.Value("bool")}),
                       desc=desc)
    start, end = start_token_id(tokenizer), end_token_id(tokenizer)
    fingerprint = datasets.fingerprint.Hasher.hash([encoded._fingerprint, start, end, max_length, line_by_line])
    blocks = datasets.Dataset.from_generator(
        _cached_blocks, fingerprint=fingerprint, writer_batch_size=10_000, features=datasets.Features({"input_ids": ids}),
        gen_kwargs={"encoded": encoded, "start": start, "end": end, "max_length": max_length, "line_by_line": line_by_line,
                    "per_batch": per_batch},
    )
    if len(blocks) == 0:
        total = sum(len(ids) + ends for batch in encoded.iter(per_batch) for ids, ends in zip(batch["ids"], batch["ends"]))
        raise SettingsError(f"the text has {total} tokens, fewer than one block of max_length {max_length}")
    return blocks


def _cached_blocks(encoded, start, end, max_length, line_by_line, per_batch):
    yield from blocks_of(encoded.iter(batch_size=per_batch), start, end, max_length, line_by_line)


def _streamed_blocks(rows, tokenizer, max_length, line_by_line):
    """Blocks of streamed text rows, tokenized a few rows at a time as they are read."""
    def batches():
        for batch in rows.iter(batch_size=1000 if line_by_line else 16):
            yield {"ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"], "ends": batch["ends"]}

    yield from blocks_of(batches(), start_token_id(tokenizer), end_token_id(tokenizer), max_length, line_by_line)


def text_batches(texts, size: int = 1000):
    """Lists of at most `size` texts from a list of documents or a dataset of text rows."""
    if isinstance(texts, list):
        for i in range(0, len(texts), size):
            yield texts[i : i + size]
    else:
        for batch in texts.iter(batch_size=size):
            yield batch["text"]


def same_tokenizer(a, b) -> bool:
    """True when both tokenizers give the same ids and layout tokens, so per-token numbers are comparable."""
    if a.get_vocab() != b.get_vocab():
        return False
    if (start_token_id(a), end_token_id(a)) != (start_token_id(b), end_token_id(b)):
        return False
    probe = "the red ball, 12 kites; Tom's hat!"
    return a(probe, add_special_tokens=False)["input_ids"] == b(probe, add_special_tokens=False)["input_ids"]


PIECE_COUNTS = "piece_counts.json"  # beside the tokenizer's files: how often training text used each piece


def save_piece_counts(tokenizer, texts: list[str], directory) -> Path:
    """Write how often each piece of `tokenizer` occurs in `texts` (the training text) to DIRECTORY/piece_counts.json,
    so a prompt whose pieces training never or rarely used can be warned about (sampling.prompts.prompt_warning).
    Pieces that never occur are left out (count 0). Returns the file written."""
    from collections import Counter

    counts = Counter()
    for batch in text_batches(texts):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    pieces = dict(zip(tokenizer.convert_ids_to_tokens(list(counts)), counts.values()))
    path = Path(directory) / PIECE_COUNTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(dict(sorted(pieces.items(), key=lambda kv: -kv[1])), ensure_ascii=False))
    os.replace(tmp, path)
    return path


def load_piece_counts(tokenizer) -> dict[str, int] | None:
    """The piece counts saved beside a tokenizer loaded from a directory (its own, or the run's tokenizer/ next to
    a final-model), or None when there are none (a hub tokenizer, a checkpoint trained before they were saved)."""
    if not tokenizer.name_or_path:
        return None
    directory = Path(tokenizer.name_or_path)
    for path in (directory / PIECE_COUNTS, directory.parent / "tokenizer" / PIECE_COUNTS):
        if path.is_file():
            return _read_counts(str(path.resolve()))
    return None


@functools.cache
def _read_counts(path: str) -> dict[str, int]:
    return json.loads(Path(path).read_text())
