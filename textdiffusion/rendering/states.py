"""Trajectory states: what each position shows after each sampler step (token text and its label).
"""

from dataclasses import asdict, dataclass

# Token states, shared with the viewer (view_animation.html) through run.json.
FIXED, MASKED, NEW, REVEALED, REMASKED = "fixed", "masked", "new", "revealed", "remasked"


LABELS = (FIXED, MASKED, NEW, REVEALED, REMASKED)


@dataclass
class StepState:
    """What one frame shows: the tokens of trajectory step `step` of one sample and the state of each.

    `tokens[i]` is the decoded string of `ids[i]` (the mask token's string where masked). `previous[i]` is the
    token a re-masked position held before this step (None elsewhere), so a frame can show what was hidden.
    `active[i]` says whether position i is in the block this step worked on (block-wise sampling); None when the
    step had no block of its own (ordinary sampling, the start, a final fill step). `confidence[i]` is the
    probability the sampler drew the token at i with, at the step that revealed it (carried to every later step
    the token stays; None where masked or fixed).
    """

    step: int
    steps: int
    ids: list[int]
    tokens: list[str]
    labels: list[str]
    previous: list[str | None]
    end_token: str | None = None  # a run of this token is drawn as one chip, "</s> x30"
    # For each position the step revealed: the sampler's top candidates there, [[token, probability], ...].
    candidates: list | None = None
    active: list[bool] | None = None
    confidence: list[float | None] | None = None

    def count(self, label: str) -> int:
        return self.labels.count(label)

    def to_dict(self) -> dict:
        return asdict(self)


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each id decoded on its own, keeping the leading space a byte-level BPE token carries (' the')."""
    return [_token_string(tokenizer, i) for i in ids]


def _token_string(tokenizer, token_id: int) -> str:
    cache = tokenizer.__dict__.setdefault("_rendering_token_cache", {})
    if token_id not in cache:
        token = tokenizer.convert_ids_to_tokens([token_id])[0]
        if token is None:
            cache[token_id] = f"<id {token_id}>"
        elif _spaces_between_tokens(tokenizer):
            cache[token_id] = _string_after_anchor(tokenizer, token_id)
        else:
            cache[token_id] = tokenizer.convert_tokens_to_string([token])
    return cache[token_id]


def _anchor_id(tokenizer) -> int:
    return next(i for i in (tokenizer.unk_token_id, tokenizer.mask_token_id, 0) if i is not None)


def _string_after_anchor(tokenizer, token_id: int) -> str:
    """What `token_id` adds to decoded text after a whole word: ' the' for a word, 'e' for a WordPiece
    continuation '##e', '.' where decoding joins punctuation to the word before it."""
    anchor = _anchor_id(tokenizer)
    before = tokenizer.decode([anchor], skip_special_tokens=False)
    return tokenizer.decode([anchor, token_id], skip_special_tokens=False)[len(before):]


def _spaces_between_tokens(tokenizer) -> bool:
    """True for tokenizers whose pieces carry no space of their own and whose decoder puts one between words
    (WordPiece's '##' continuations, SentencePiece's '▁'): a token decoded alone loses its word boundary, so
    each one is drawn as what it adds after a word. Byte-level BPE pieces carry their space (' the') and decode alone."""
    flag = tokenizer.__dict__.get("_rendering_spaced")
    if flag is None:
        anchor = _anchor_id(tokenizer)
        alone = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens([anchor]))
        flag = tokenizer.decode([anchor, anchor], skip_special_tokens=False) != alone + alone
        tokenizer.__dict__["_rendering_spaced"] = flag
    return flag


# The parts of a chip in this order, whatever order their tokens come in: the tokens of a run are all the same.
CHIP_ORDER = (FIXED, REVEALED, NEW)


def collapse_end_runs(tokens, labels, previous, end_token: str | None, active=None):
    """(tokens, labels, previous, active) with every run of two or more shown `end_token`s as one chip "</s> ×N".

    A chip whose tokens differ in state is split into one part per state, each "</s> ×n" with its own label
    (fixed, then revealed earlier, then new; parts after the first start with a space): "</s> ×1", " </s> ×3" when
    one came earlier and three this step. A part is active if any of its tokens is. Masked and re-masked positions
    are never merged (each is a slot still to fill). `active` None (no active block) stays None."""
    if end_token is None:
        return list(tokens), list(labels), list(previous), None if active is None else list(active)
    out_tokens, out_labels, out_previous, out_active = [], [], [], []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == end_token and labels[j] not in (MASKED, REMASKED):
            j += 1
        if j - i >= 2:
            for part, label in enumerate(x for x in CHIP_ORDER if x in labels[i:j]):
                members = [k for k in range(i, j) if labels[k] == label]
                out_tokens.append(f"{' ' if part else ''}{end_token} \u00d7{len(members)}")
                out_labels.append(label)
                out_previous.append(None)
                out_active.append(active is not None and any(active[k] for k in members))
            i = j
        else:
            out_tokens.append(tokens[i])
            out_labels.append(labels[i])
            out_previous.append(previous[i])
            out_active.append(active is not None and active[i])
            i += 1
    return out_tokens, out_labels, out_previous, None if active is None else out_active


def end_token_string(tokenizer) -> str | None:
    from textdiffusion.data.tokenization import end_token_id

    end = end_token_id(tokenizer)
    return None if end is None else _token_string(tokenizer, end)


def trajectory_states(result, tokenizer, sample: int = 0, skip_start: bool = True) -> list[StepState]:
    """One StepState per trajectory step (step 0 = start) of row `sample` of a diffusion.SampleResult.

    `skip_start` leaves out a leading start token (`<s>`), which is layout, not text.
    """
    from textdiffusion.data.tokenization import start_token_id

    trajectory = result.trajectory
    first = 1 if skip_start and int(trajectory[0].ids[sample, 0]) == start_token_id(tokenizer) else 0
    fixed = result.fixed[sample, first:].tolist()
    mask_id = tokenizer.mask_token_id
    states, before = [], None
    carried = [None] * len(fixed)  # the probability each shown token was drawn with, from the step that revealed it
    for k, step in enumerate(trajectory):
        ids = step.ids[sample, first:].tolist()
        revealed = step.revealed[sample, first:].tolist()
        remasked = step.remasked[sample, first:].tolist()
        tokens = token_strings(tokenizer, ids)
        labels, previous = [], []
        for i, token_id in enumerate(ids):
            was = None
            if fixed[i]:
                label = FIXED
            elif remasked[i]:
                label, was = REMASKED, _token_string(tokenizer, before[i])
            elif token_id == mask_id:
                label = MASKED
            elif revealed[i]:
                label = NEW
            else:
                label = REVEALED
            labels.append(label)
            previous.append(was)
        candidates = None
        if step.candidates is not None:
            top, probs = step.candidates[sample, first:].tolist(), step.candidate_probs[sample, first:].tolist()
            candidates = [
                [[_token_string(tokenizer, t), round(p, 4)] for t, p in zip(top[i], probs[i]) if t >= 0] if revealed[i] else None
                for i in range(len(ids))
            ]
        active = None if step.active is None else step.active[sample, first:].tolist()
        drawn = step.confidence[sample, first:].tolist()
        carried = [round(drawn[i], 4) if label == NEW else None if label in (FIXED, MASKED, REMASKED) else carried[i]
                   for i, label in enumerate(labels)]
        states.append(StepState(k, len(trajectory) - 1, ids, tokens, labels, previous, end_token_string(tokenizer), candidates,
                                active, carried))
        before = ids
    return states
