"""The built-in corpus: short deterministic stories whose beginning constrains their end.

Every story introduces two different people, a colour, an object and a place in its first sentence, and
every later sentence must refer back to exactly those. A model that only learned which words follow which
(a bigram model, or a masked LM that ignores long-range context) writes stories that mix up names, colours
or objects, and `is_valid_story` rejects them. The checker is exact: each story is one of a small number of
sentence plans, written as regular expressions whose back-references tie later mentions to the first one.

The corpus ships as code, not as a file, so `--quick-test`, the tests and CI need no download.
"""

import random
import re
from functools import lru_cache

NAMES = ("tom", "anna", "ben", "lily", "sam", "mia", "max", "emma", "leo", "zoe", "jack", "ella")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown")
OBJECTS = ("ball", "kite", "book", "hat", "box", "cup", "boat", "drum", "bell", "lamp")
PLACES = ("park", "garden", "kitchen", "school", "forest", "house")

# Each story is an opening and an ending. {A}/{B} are the two people, {C} the colour, {O} the object, {P} the
# place; the first mention of each binds it and every later mention must repeat it. Every opening and every
# ending has the same length with its slots at the same places: a tiny model then learns the long-range rule
# (copy the name, colour and object from the first sentence) within the quick-test's few hundred steps, which
# it did not when the sentences had different lengths.
OPENINGS = (
    "the day {A} found a {C} {O} in the {P} .",
    "the night {A} saw a {C} {O} near the {P} .",
    "the morning {A} made a {C} {O} at the {P} .",
    "the week {A} lost a {C} {O} in the {P} .",
)
ENDINGS = (
    "then {A} gave the {C} {O} to {B} .",
    "later {A} showed the {C} {O} to {B} .",
    "so {A} threw the {C} {O} at {B} .",
    "soon {A} sold the {C} {O} to {B} .",
)

_SLOTS = {"A": NAMES, "B": NAMES, "C": COLOURS, "O": OBJECTS, "P": PLACES}


def generate_story(rng: random.Random) -> str:
    """One story; the two people always differ."""
    a, b = rng.sample(NAMES, 2)
    values = {"A": a, "B": b, "C": rng.choice(COLOURS), "O": rng.choice(OBJECTS), "P": rng.choice(PLACES)}
    plan = (rng.choice(OPENINGS), rng.choice(ENDINGS))
    return " ".join(plan).format(**values)


def generate_corpus(num_stories: int, seed: int = 0) -> list[str]:
    """`num_stories` stories, the same list for the same seed on every machine."""
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(num_stories)]


def _plan_regex(plan: str, consistent: bool = True) -> re.Pattern:
    """Turn a plan into a regex: first mention of a slot captures it, later mentions must repeat it.

    With consistent=False every mention may be any word of its kind: the grammar without the long-range rule.
    """
    pattern, seen, pos = "", set(), 0
    for match in re.finditer(r"\{([ABCOP])\}", plan):
        pattern += re.escape(plan[pos:match.start()])
        slot = match.group(1)
        if not consistent:
            pattern += f"(?:{'|'.join(_SLOTS[slot])})"
        elif slot in seen:
            pattern += f"(?P={slot})"
        else:
            pattern += f"(?P<{slot}>{'|'.join(_SLOTS[slot])})"
            seen.add(slot)
        pos = match.end()
    return re.compile(pattern + re.escape(plan[pos:]))


@lru_cache(maxsize=2)
def _all_plans(consistent: bool = True) -> list[re.Pattern]:
    return [_plan_regex(" ".join((o, e)), consistent) for o in OPENINGS for e in ENDINGS]


def is_valid_story(text: str) -> bool:
    """True when `text` (whitespace-normalised) is a story this corpus could have produced."""
    text = " ".join(text.split())
    for plan in _all_plans():
        match = plan.fullmatch(text)
        if match and match.group("A") != match.group("B"):
            return True
    return False


def is_well_formed(text: str) -> bool:
    """True when `text` follows the corpus grammar, whether or not later mentions match the first ones.

    The gap between this and is_valid_story is what a model has not learned of the long-range rule.
    """
    text = " ".join(text.split())
    return any(plan.fullmatch(text) for plan in _all_plans(consistent=False))


def num_possible_stories() -> int:
    """How many distinct stories exist, so 'not a copy of training data' has a meaning."""
    per_plan = len(NAMES) * (len(NAMES) - 1) * len(COLOURS) * len(OBJECTS) * len(PLACES)
    return per_plan * len(OPENINGS) * len(ENDINGS)
