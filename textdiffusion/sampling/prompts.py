"""Prompts in, text out: the input row laid out as in training, banned tokens, and decoded texts.
"""

import torch

from textdiffusion.data.tokenization import (
    end_token_id,
    special_token_ids,
    start_token_id,
)

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
    Raises ValueError with a one-line reason for a template without masks or a prompt that does not fit.
    """
    import re

    from textdiffusion.data.tokenization import end_token_id

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


def decode_texts(tokenizer, ids: torch.Tensor, stop_at_end: bool = True) -> list[str]:
    """Text of each row: the start token dropped, and (line-by-line models) everything from the end token on."""
    from textdiffusion.data.tokenization import end_token_id

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
