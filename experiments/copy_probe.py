"""Has the model learned to copy? Mask one later mention of the person, colour or object, show everything else.

    python -m experiments.copy_probe --checkpoint results/final-model
    python -m experiments.copy_probe --checkpoint runs/learning_curve/diffusion-seed0/checkpoint-3000

For held-out built-in stories, the last mention of the person (A), of the colour (C) and of the object (O) is
masked while every other token stays visible, so the answer is written earlier in the same story. Reported per
slot: how often the model's most likely token is the right word, the chance level of a model that knows only
which kind of word goes there (1 / the number of words of the kind), and whether the answer comes from reading
the story: the same position is scored again with the earlier mentions swapped for another word of the kind, and
a model that copies follows the swap. A model that has learned grammar but not the long-range rule sits at
chance with no reaction to the swap. `embedding_cosine` is the mean cosine similarity of the kind's input
embeddings: near 1, the model has collapsed the words into one vector and cannot copy them.

A last row probes the one rule that is not a copy: the second person (B) must differ from the first. Every
mention of B is masked, everything else visible; `first_person_share` is the share of the names' probability the
model gives the first person at B's first mention: 0 in the corpus, 1/12 (`chance`) for a model that knows a name
goes there but not which one it must not be; `top1_right`: the most likely token is a name other than the first
person's.
"""

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.helpers import tables
from textdiffusion import cli, models
from textdiffusion.data import corpus, documents

logger = logging.getLogger(__name__)

SLOTS = {"A": corpus.NAMES, "C": corpus.COLOURS, "O": corpus.OBJECTS}


@dataclass
class ProbeArguments:
    checkpoint: str = field(default="results/final-model", metadata={"help": "Diffusion checkpoint trained on the built-in corpus."})
    num_stories: int = field(default=300, metadata={"help": "Held-out stories probed (those that mention the slot twice or more)."})
    seed: int = field(default=0, metadata={"help": "Which held-out stories and which swaps."})
    output_dir: str = field(default="results/experiments/copy_probe", metadata={"help": "Where copy_probe.csv is written."})


def word_token(tokenizer, word: str) -> int:
    """The token of `word` inside a sentence (one token in the built-in tokenizers)."""
    return tokenizer(" " + word, add_special_tokens=False)["input_ids"][-1]


def embedding_cosine(model, tokenizer, words) -> float:
    """Mean cosine similarity between the input embeddings of `words` (centred on the vocabulary's mean): near 1
    when the model has collapsed them into one vector and cannot tell them apart, near 0 for random vectors."""
    table = model.get_input_embeddings().weight.detach().float()
    ids = [word_token(tokenizer, w) for w in words]
    vectors = torch.nn.functional.normalize(table[ids] - table.mean(0), dim=-1)
    similarity = vectors @ vectors.T
    return float(similarity[~torch.eye(len(ids), dtype=torch.bool)].mean())


def mentions(tokenizer, ids: list[int], word: str) -> list[int]:
    return [i for i, token in enumerate(ids) if tokenizer.decode([token]).strip() == word]


def swapped(tokenizer, ids: list[int], positions: list[int], word: str) -> list[int]:
    """`ids` with the token at each of `positions` replaced by `word`'s (one token in the built-in tokenizers)."""
    token = word_token(tokenizer, word)
    return [token if i in positions else t for i, t in enumerate(ids)]


@torch.no_grad()
def probe(checkpoint: models.Checkpoint, num_stories: int, seed: int) -> list[dict]:
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    rng = random.Random(seed)
    stories = corpus.generate_corpus(num_stories, seed=documents.BUILTIN_EVAL_SEED + 1000 + seed)
    rows = []
    for slot, words in SLOTS.items():
        hits = follows = probed = 0
        for story in stories:
            ids = tokenizer(story)["input_ids"][: checkpoint.max_positions]
            word = next(w for w in story.split() if w in words)
            where = mentions(tokenizer, ids, word)
            if len(where) < 2:
                continue
            other = rng.choice([w for w in words if w != word])
            target = where[-1]
            pair = torch.tensor([ids, swapped(tokenizer, ids, where[:-1], other)])
            pair[:, target] = tokenizer.mask_token_id
            logits = model(input_ids=pair.to(checkpoint.device)).logits[:, target].float().cpu()
            right, swap = word_token(tokenizer, word), word_token(tokenizer, other)
            hits += int(logits[0].argmax()) == right
            follows += int(logits[1].argmax()) == swap
            probed += 1
        rows.append({"slot": slot, "stories": probed, "top1_right": hits / max(probed, 1),
                     "top1_follows_swap": follows / max(probed, 1), "chance": 1 / len(words),
                     "embedding_cosine": embedding_cosine(model, tokenizer, words)})
    rows.append(second_person(model, tokenizer, stories, checkpoint.max_positions, checkpoint.device))
    return rows


@torch.no_grad()
def second_person(model, tokenizer, stories: list[str], max_positions: int, device="cpu") -> dict:
    """The B row: every mention of the second person masked; how much of the names' probability goes to the first."""
    name_ids = [word_token(tokenizer, w) for w in corpus.NAMES]
    share = right = probed = 0
    for story in stories:
        ids = tokenizer(story)["input_ids"][:max_positions]
        first = next(w for w in story.split() if w in corpus.NAMES)
        second = next(w for w in story.split() if w in corpus.NAMES and w != first)
        where = mentions(tokenizer, ids, second)
        if not where:  # cut off by max_positions
            continue
        masked = torch.tensor([ids])
        masked[0, where] = tokenizer.mask_token_id
        probs = model(input_ids=masked.to(device)).logits[0, where[0]].float().cpu().softmax(-1)
        first_id = name_ids[corpus.NAMES.index(first)]
        share += float(probs[first_id] / probs[name_ids].sum())
        top = int(probs.argmax())
        right += top in name_ids and top != first_id
        probed += 1
    return {"slot": "B", "stories": probed, "top1_right": right / max(probed, 1), "top1_follows_swap": None,
            "chance": 1 / len(corpus.NAMES), "embedding_cosine": embedding_cosine(model, tokenizer, corpus.NAMES),
            "first_person_share": share / max(probed, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(ProbeArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.num_stories < 1 or args.seed < 0:
        raise cli.UsageError("--num-stories must be at least 1 and --seed 0 or more")
    checkpoint = models.load_checkpoint(args.checkpoint, "cpu")
    rows = probe(checkpoint, args.num_stories, args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = [*rows[0], "first_person_share"]
    tables.write_csv(out / "copy_probe.csv", rows, columns)
    print(tables.markdown_table(rows, columns, lambda c, v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)))
    return rows


if __name__ == "__main__":
    cli.run(main)
