"""Prompts in, text out: the input row laid out as in training (and a warning for prompt words training never
had), banned tokens, decoded texts and how many tokens of text they hold.
"""

import functools
import logging
import re

import torch

from textdiffusion.data.tokenization import (
    end_token_id,
    is_character_level,
    load_piece_counts,
    special_token_ids,
    start_token_id,
)
from textdiffusion.errors import SettingsError

logger = logging.getLogger(__name__)

RARE = 5  # a piece the training text used fewer times than this is rare (with saved piece counts)

_INFILL_MASK = r"\[MASK\](?:\*(\d+))?"


def build_inputs(
    tokenizer, prefix: str = "", max_length: int = 48, num_samples: int = 1, infill: str | None = None, end_token: bool = False
):
    """(num_samples, seq) input ids laid out exactly as in training, masks where text is to be generated.

    Prefix mode: `<s> prefix <mask> ... <mask>` up to max_length. There is no end token between the prefix and
    the continuation: the model never saw one there, and one would make it start a new document.
    Infill mode: `<s>` followed by the template, each `[MASK]*n` becoming n masks; every other token is fixed.
    With `end_token` (line-by-line models, which saw every document end with it) a fixed end token follows the
    template when it fits.
    A whitespace-only prefix is no prefix (said in one line); prompt words the model rarely or never saw are
    warned about in one line (`prompt_warning`).
    Raises ValueError with a one-line reason for a template without masks, a prompt that does not fit or one
    made only of pieces unknown to the model.
    """
    prefix = clean_prefix(prefix)
    prompt = re.sub(_INFILL_MASK, " ", infill) if infill is not None else prefix
    if prompt != prompt.lower() and lower_cases(tokenizer):
        _say_once(f"the model's tokenizer lower-cases text: the prompt reads {' '.join(prompt.lower().split())!r}")
    warning = prompt_warning(tokenizer, prompt)
    if warning:
        _warn_once(warning)
    start = start_token_id(tokenizer)
    if infill is not None:
        ids = [start]
        pieces = re.split(_INFILL_MASK, infill)
        # re.split alternates literal text and the captured count of each [MASK]
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                text = piece.rstrip() if i + 1 < len(pieces) else piece
                if text.strip():
                    ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids += [tokenizer.mask_token_id] * int(piece or 1)
        if tokenizer.mask_token_id not in ids:
            raise ValueError(f"infill template {infill!r} has no [MASK]; write [MASK] or [MASK]*n where text goes")
        if len(ids) > max_length:
            raise ValueError(f"infill template is {len(ids)} tokens, more than max_length {max_length}")
        if end_token and len(ids) < max_length:
            ids.append(end_token_id(tokenizer))
    else:
        ids = [start] + (tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [])
        if len(ids) >= max_length:
            raise ValueError(f"prefix is {len(ids) - 1} tokens; it must be shorter than max_length {max_length} - 1")
        ids += [tokenizer.mask_token_id] * (max_length - len(ids))
    return torch.tensor([ids] * num_samples)


def clean_prefix(prefix: str) -> str:
    """`prefix`, or "" for one that is only whitespace (which would otherwise become a prompt of space pieces),
    said in one line."""
    if prefix and not prefix.strip():
        _warn_once(f"prefix {prefix!r} is only whitespace: generating without a prompt (unconditionally)")
        return ""
    return prefix


def _pieces(tokenizer, word: str, first: bool) -> list[str]:
    """The pieces of one prompt word as the prompt tokenizes it: after a space unless it is the first word."""
    ids = tokenizer(word if first else " " + word, add_special_tokens=False)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids)


def unfamiliar_words(tokenizer, text: str, piece_counts: dict[str, int] | None = None) -> dict[str, str]:
    """The words of `text` the model rarely or never saw in training, each with why (words in their order).

    A word is unfamiliar when a piece is the unknown token; when, with `piece_counts` (the training text's, see
    tokenization.save_piece_counts), a piece was used fewer than RARE times; when it has a capital letter and
    splits into more pieces than the same word in lower case (a case the training text lacked: "Tom" is 'T' 'om'
    where "tom" is one piece); or, without counts, when it splits into three or more pieces, most of them single
    characters, in lower case too (a word the tokenizer, trained on the training text, never merged). Character-level tokenizers
    split every word into characters, so only the first two tests apply to them."""
    characters = is_character_level(tokenizer)
    reasons = {}
    for i, word in enumerate(text.split()):
        pieces = _pieces(tokenizer, word, first=i == 0)
        lower = _pieces(tokenizer, word.lower(), first=i == 0)
        if tokenizer.unk_token is not None and tokenizer.unk_token in pieces:
            reasons[word] = "unknown to the tokenizer"
        elif piece_counts is not None and any(piece_counts.get(p, 0) < RARE for p in pieces):
            rare = {p: piece_counts.get(p, 0) for p in pieces if piece_counts.get(p, 0) < RARE}
            never = [p for p, n in rare.items() if n == 0]
            said = ([f"{_shown(tokenizer, never)} never"] if never else []) + [
                f"{_shown(tokenizer, [p])} only {n}x" for p, n in rare.items() if n]
            whole = "" if len(rare) == len(set(pieces)) else f"{_shown(tokenizer, pieces)}: "
            reasons[word] = f"{whole}{', '.join(said)} in the training text"
        elif not characters and _mostly_characters(tokenizer, lower):
            reasons[word] = f"{len(pieces)} pieces, mostly single characters: rare or absent in the training text"
        elif word != word.lower() and len(pieces) > len(lower):
            reasons[word] = f"{len(pieces)} pieces where {word.lower()!r} is {len(lower)}: a case the training text lacks"
    return reasons


def _shown(tokenizer, pieces: list[str], most: int = 4) -> str:
    """Pieces as the text they stand for ("' d' 'r' 'a'"); more than `most`: their number."""
    if len(pieces) > most:
        return f"{len(pieces)} pieces"
    return ("piece " if len(pieces) == 1 else "pieces ") + " ".join(repr(tokenizer.convert_tokens_to_string([p])) for p in pieces)


def _mostly_characters(tokenizer, pieces: list[str]) -> bool:
    """Three or more pieces, most of them one character: a word the tokenizer never merged."""
    single = sum(len(tokenizer.convert_tokens_to_string([p]).strip()) <= 1 for p in pieces)
    return len(pieces) >= 3 and single * 2 > len(pieces)


def prompt_warning(tokenizer, text: str, piece_counts: dict[str, int] | None = None) -> str | None:
    """One line naming the prompt's words the model rarely or never saw in training and why (`unfamiliar_words`;
    `piece_counts`: by default those saved beside the tokenizer, if any), or None when there are none.
    Raises SettingsError when every piece of the prompt is the tokenizer's unknown token: the model would be given
    nothing. A prompt whose pieces exist but never occurred in training is generated from, with that warning."""
    if not text.strip():
        return None
    counts = load_piece_counts(tokenizer) if piece_counts is None else piece_counts
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    if pieces and all(p == tokenizer.unk_token for p in pieces):
        raise SettingsError(f"prompt {text.strip()!r}: every piece of it is unknown to the model's tokenizer; write it "
                            "in words of the training text (a lower-case corpus wants lower case)")
    if pieces and counts is not None and all(counts.get(p, 0) == 0 for p in pieces):
        return (f"prompt {text.strip()!r}: no piece of it occurs in the model's training text, so the text will not "
                "follow it; write it in words of that text (a lower-case corpus wants lower case)")
    reasons = unfamiliar_words(tokenizer, text, counts)
    if not reasons:
        return None
    words = "; ".join(f"{word!r} ({why})" for word, why in reasons.items())
    return f"prompt words the model rarely or never saw in training, so the text may not follow them: {words}"


def lower_cases(tokenizer) -> bool:
    """True for an uncased tokenizer (BERT's uncased WordPiece): "Tom" and "tom" are the same ids."""
    return tokenizer("Tom Was", add_special_tokens=False)["input_ids"] == tokenizer("tom was", add_special_tokens=False)["input_ids"]


@functools.cache
def _warn_once(line: str) -> None:
    logger.warning(line)


@functools.cache
def _say_once(line: str) -> None:
    logger.info(line)


def decode_texts(tokenizer, ids: torch.Tensor, stop_at_end: bool = True) -> list[str]:
    """Text of each row: the start token dropped, and (line-by-line models) everything from the end token on."""
    start, end = start_token_id(tokenizer), end_token_id(tokenizer)
    texts = []
    for row in ids.tolist():
        row = row[1:] if row and row[0] == start else row
        if stop_at_end and end in row:
            row = row[: row.index(end)]
        texts.append(tokenizer.decode(row, skip_special_tokens=False).strip())
    return texts


def text_token_count(tokenizer, generated: list[int], stop_at_end: bool = True) -> int:
    """Tokens of one generated text, prompt left out: the ids up to its first end token. That end token (which
    closes the document) is not counted, nor the end tokens a diffusion row fills its remaining positions with,
    so a diffusion sample and a GPT-2 one of the same text count the same. `stop_at_end=False` (a model of packed
    text, which never ends a document): every id counts."""
    end = end_token_id(tokenizer)
    return generated.index(end) if stop_at_end and end in generated else len(generated)


def generated_text_tokens(tokenizer, ids: torch.Tensor, fixed: torch.Tensor, stop_at_end: bool = True) -> list[int]:
    """`text_token_count` of each row of a diffusion sample: ids (rows, seq), fixed (rows, seq) True where the
    prompt or template was given."""
    return [text_token_count(tokenizer, row[~keep].tolist(), stop_at_end) for row, keep in zip(ids, fixed)]


def banned_token_ids(tokenizer, allow_end: bool) -> list[int]:
    """Every special token (mask, padding, start, unknown ...), except the end token when it may be sampled.

    A line-by-line model learned to end each document with the end token, so it may place it where the text
    should stop; a model trained on packed text never saw a document end inside its window.
    """
    end = end_token_id(tokenizer)
    return [i for i in special_token_ids(tokenizer) if not (allow_end and i == end)]
