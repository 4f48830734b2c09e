"""The built-in corpus: short stories whose beginning constrains their end, with a layout that varies.

Every story introduces a person, a colour and an object (and usually a place) in its first sentence; zero to two
middle sentences and a final sentence refer back to them, and the final one brings in a second, different person.
Sentences come in different lengths and clause orders and have optional words, so the position of what must agree
differs from story to story: a model cannot copy "the word six places back", it has to find the first mention.
A model that only learned which words follow which (a bigram model, or a masked LM that ignores long-range
context) mixes up names, colours or objects, and `is_valid_story` rejects those stories.

The checker is exact: a story is valid when it is an opening, up to two middles and an ending of the grammar below
(one regular expression per opening and ending, each mention of a slot captured), every mention of a slot is the
same word, and the two people differ. `disagreeing_slots` says which of these rules a story breaks.
`layout="fixed"` draws the older fixed-layout stories (four openings and four endings of one length, no middles,
no optional words); they are a subset of the same grammar, so the same checker judges both.

The corpus ships as code, not as a file, so `--quick-test`, the tests and CI need no download.
"""

import random
import re
from functools import lru_cache

NAMES = ("tom", "anna", "ben", "lily", "sam", "mia", "max", "emma", "leo", "zoe", "jack", "ella")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown")
OBJECTS = ("ball", "kite", "book", "hat", "box", "cup", "boat", "drum", "bell", "lamp")
PLACES = ("park", "garden", "kitchen", "school", "forest", "house")
# Free words: any of them may stand in their slot, they bind nothing.
SIZES = ("big", "small", "little", "old", "new")
WEATHER = ("sunny", "cold", "windy", "rainy")
FEELINGS = ("happy", "glad", "proud")

# {A}/{B}: the two people, {C} colour, {O} object, {P} place: the first mention binds the slot and every later
# mention must repeat it. {S}/{W}/{F}: free words. [...]: optional words. The first four openings and endings
# are the fixed-layout stories.
OPENINGS = (
    "the day {A} found a {C} {O} in the {P} .",
    "the night {A} saw a {C} {O} near the {P} .",
    "the morning {A} made a {C} {O} at the {P} .",
    "the week {A} lost a {C} {O} in the {P} .",
    "{A} found a [{S}] {C} {O} .",
    "in the {P} , {A} saw a [{S}] {C} {O} .",
    "there was a {C} {O} in the {P} and {A} wanted it .",
)
MIDDLES = (
    "it was a [very] {W} day .",
    "{A} was [very] {F} .",
    "the {O} was [very] {S} .",
    "{A} played with the {O} all day .",
)
ENDINGS = (
    "then {A} gave the {C} {O} to {B} .",
    "later {A} showed the {C} {O} to {B} .",
    "so {A} threw the {C} {O} at {B} .",
    "soon {A} sold the {C} {O} to {B} .",
    "later {B} took the {C} {O} from {A} .",
    "{A} showed the {C} {O} to {B} and {B} smiled .",
    "at the end , {A} and {B} played with the {C} {O} [in the {P}] .",
)
FIXED_LAYOUT = 4  # the first four openings and endings, no middles, no optional words
MAX_MIDDLES = 2
LAYOUTS = ("variable", "fixed")

_BOUND = {"A": NAMES, "B": NAMES, "C": COLOURS, "O": OBJECTS, "P": PLACES}
_FREE = {"S": SIZES, "W": WEATHER, "F": FEELINGS}
_SLOT = re.compile(r"\{([A-Z])\}")
_OPTIONAL = re.compile(r" ?\[([^\]]*)\]")


def _fill(template: str, values: dict, rng: random.Random, optional: bool) -> str:
    """Write one sentence: optional parts kept with probability 1/2 (never without `optional`), slots filled."""
    template = _OPTIONAL.sub(lambda m: f" {m.group(1)}" if optional and rng.random() < 0.5 else "", template)
    return _SLOT.sub(lambda m: values[m.group(1)] if m.group(1) in values else rng.choice(_FREE[m.group(1)]), template)


def generate_story(rng: random.Random, layout: str = "variable") -> str:
    """One story; the two people always differ."""
    a, b = rng.sample(NAMES, 2)
    values = {"A": a, "B": b, "C": rng.choice(COLOURS), "O": rng.choice(OBJECTS), "P": rng.choice(PLACES)}
    if layout == "fixed":
        plan = [rng.choice(OPENINGS[:FIXED_LAYOUT]), rng.choice(ENDINGS[:FIXED_LAYOUT])]
    elif layout == "variable":
        middles = [rng.choice(MIDDLES) for _ in range(rng.randint(0, MAX_MIDDLES))]
        plan = [rng.choice(OPENINGS), *middles, rng.choice(ENDINGS)]
    else:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    return " ".join(_fill(sentence, values, rng, optional=layout == "variable") for sentence in plan)


def generate_corpus(num_stories: int, seed: int = 0, layout: str = "variable") -> list[str]:
    """`num_stories` stories, the same list for the same seed on every machine."""
    rng = random.Random(seed)
    return [generate_story(rng, layout) for _ in range(num_stories)]


def _words(words) -> str:
    return f"(?:{'|'.join(words)})"


def _sentence_regex(template: str, capture: bool, counter: list) -> str:
    """A sentence as a regex in which each mention of a bound slot is any word of its kind; with `capture` each
    mention is a group of its own (A_0, A_1, ...; `counter` numbers them), so agreement can be checked after."""
    pattern, pos = "", 0
    for match in re.finditer(r"\{([A-Z])\}|\[|\]", template):
        pattern += re.escape(template[pos:match.start()])
        token = match.group(0)
        if token == "[":
            pattern = pattern[:-2] + "(?: " if pattern.endswith(r"\ ") else pattern + "(?:"
        elif token == "]":
            pattern += ")?"
        else:
            slot = match.group(1)
            words = {**_FREE, **_BOUND}[slot]
            if slot in _FREE or not capture:
                pattern += _words(words)
            else:
                pattern += f"(?P<{slot}_{counter[0]}>{'|'.join(words)})"
                counter[0] += 1
        pos = match.end()
    return pattern + re.escape(template[pos:])


@lru_cache(maxsize=2)
def _story_regexes(capture: bool) -> list[re.Pattern]:
    """One regex per (opening, ending) pair, with up to MAX_MIDDLES optional middle sentences between them."""
    regexes = []
    for opening in OPENINGS:
        for ending in ENDINGS:
            counter = [0]
            parts = [_sentence_regex(opening, capture, counter)]
            for _ in range(MAX_MIDDLES):
                parts.append(f"(?: (?:{'|'.join(_sentence_regex(m, capture, counter) for m in MIDDLES)}))?")
            parts.append(" " + _sentence_regex(ending, capture, counter))
            regexes.append(re.compile("".join(parts)))
    return regexes


def is_valid_story(text: str) -> bool:
    """True when `text` (whitespace-normalised) is a story this corpus could have produced."""
    return disagreeing_slots(text) == set()


def is_well_formed(text: str) -> bool:
    """True when `text` follows the grammar, whether or not later mentions repeat the first ones.

    The gap between this and is_valid_story is what a model has not learned of the long-range rule.
    """
    text = " ".join(text.split())
    return any(regex.fullmatch(text) for regex in _story_regexes(capture=False))


def disagreeing_slots(text: str) -> set[str] | None:
    """The long-range rules a story breaks: None when it is not well formed, else the set of slots whose mentions
    differ ("A" the person, "C" the colour, "O" the object, "P" the place; "B" when the second person is the first
    one). Empty for a valid story."""
    text = " ".join(text.split())
    for regex in _story_regexes(capture=True):
        match = regex.fullmatch(text)
        if match:
            mentions: dict = {}
            for name, word in match.groupdict().items():
                if word is not None:
                    mentions.setdefault(name[0], set()).add(word)
            broken = {slot for slot, words in mentions.items() if slot != "B" and len(words) > 1}
            if mentions["B"] & mentions["A"] or len(mentions["B"]) > 1:
                broken.add("B")
            return broken
    return None
