"""Does classifier-free guidance make a continuation follow its prompt? Prompt adherence against --cfg-scale.

    python -m experiments.cfg_adherence                     # results/final-model (built-in stories), judged by results-ar/final-model
    python -m experiments.cfg_adherence --checkpoint runs/benchmark/shakespeare-char/L128-full-seed0/diffusion/final-model \\
        --judge runs/benchmark/shakespeare-char/ar-char-tiny-L128-v4000-b12-s2000-w100-lr0.001-seed0/final-model \\
        --text-file runs/benchmark/shakespeare-char/L128-full-seed0/data/test.txt

Prompts: for a model of the built-in stories, the opening sentence of --num-prompts stories the corpus draws with a
seed of its own (the rest of each story is the reference continuation); for other models, --prompt-tokens tokens
of held-out text (--text-file) at evenly spaced places, the following tokens up to the model's length being the
reference. Each prompt is continued --samples-per-prompt times by the diffusion model at every --cfg-scales value
(sampling.generate, --strategy/--steps as given, generate.py's defaults otherwise; scale 0 is unguided) and by the
judge itself (a causal LM with the same tokenizer: the matched GPT-2).

Adherence is the issue's measure: the judge's perplexity of each continuation without its prompt divided by its
perplexity given the prompt (1 = the prompt tells the judge nothing about the continuation; the held-out
continuation's figure is what real text shows). Also reported: the judge perplexity given the prompt (quality),
the continuation's unigram entropy, the forward passes per sample (classifier-free guidance runs each pass twice,
conditional and with the prompt masked, and counts two), and for the built-in stories the share of whole stories
the corpus's checker accepts: the ending must repeat the prompt's person, colour and object. Writes
cfg_adherence.csv into --output-dir and prints the table.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from experiments.helpers import tables
from textdiffusion import cli, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus, tokenization
from textdiffusion.data.tokenization import end_token_id, start_token_id
from textdiffusion.metrics import likelihood, text_metrics

logger = logging.getLogger(__name__)

PROMPT_SEED = 987_654  # the built-in stories' prompts: a corpus draw of its own, not the training draw


@dataclass
class AdherenceArguments:
    checkpoint: str = field(default="results/final-model", metadata={"help": "Diffusion checkpoint (not block diffusion: guidance would mask its cached prompt)."})
    judge: str = field(default="results-ar/final-model", metadata={"help": "Causal LM with the same tokenizer that scores the continuations (the matched GPT-2)."})
    text_file: str | None = field(default=None, metadata={"help": "Held-out text for the prompts of a model not of the built-in stories."})
    cfg_scales: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0], metadata={"help": "Guidance scales (>= 0; 0 = none)."})
    num_prompts: int = field(default=32, metadata={"help": "Prompts."})
    samples_per_prompt: int = field(default=4, metadata={"help": "Continuations of each prompt per sampler."})
    prompt_tokens: int = field(default=32, metadata={"help": "--text-file: tokens of held-out text per prompt."})
    strategy: str | None = field(default=None, metadata={"help": "Diffusion sampler strategy (default: generate.py's)."})
    steps: int | None = field(default=None, metadata={"help": "Diffusion sampler passes (default: generate.py's for the strategy)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (prompt k uses seed + k)."})
    threads: int | None = field(default=1, metadata={"help": "torch intra-op threads."})
    output_dir: str = field(default="results/experiments/cfg_adherence", metadata={"help": "Where cfg_adherence.csv is written."})


@dataclass
class Prompt:
    text: str
    reference: list[int]  # the held-out continuation's ids (with the end token for a line-by-line model)
    document: str = ""  # the whole held-out document (a built-in story, checked by the corpus's checker)


def builtin_prompts(tokenizer, num: int, length: int) -> list[Prompt]:
    """The opening sentence of `num` stories; the reference is the rest of the story, cut to `length` positions."""
    prompts = []
    for story in corpus.generate_corpus(num, seed=PROMPT_SEED):
        opening = story.split(" . ", 1)[0] + " ."
        ids = tokenizer(story, add_special_tokens=False)["input_ids"]
        head = tokenizer(opening, add_special_tokens=False)["input_ids"]
        assert ids[: len(head)] == head, "the opening must tokenise as the start of its story"
        prompts.append(Prompt(opening, (ids[len(head) :] + [end_token_id(tokenizer)])[: length - 1 - len(head)], story))
    return prompts


def text_prompts(tokenizer, path: str, num: int, prompt_tokens: int, length: int) -> list[Prompt]:
    ids = tokenizer(Path(path).read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    window = length - 1  # the start token takes one position
    if prompt_tokens >= window:
        raise UsageError(f"--prompt-tokens {prompt_tokens} leaves no room to continue in the model's {length} positions")
    if len(ids) < window * num:
        raise UsageError(f"{path} has {len(ids)} tokens, fewer than --num-prompts {num} windows of {window}")
    stride = len(ids) // num
    rows = [ids[k * stride : k * stride + window] for k in range(num)]
    return [Prompt(tokenizer.decode(row[:prompt_tokens]), row[prompt_tokens:]) for row in rows]


def split_rows(ids: torch.Tensor, fixed: torch.Tensor, end: int | None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids with the start token, continuation ids up to and including the first end token) per row."""
    pairs = []
    for row, keep in zip(ids.tolist(), fixed.tolist()):
        prompt = [t for t, k in zip(row, keep) if k]
        cont = [t for t, k in zip(row, keep) if not k]
        if end is not None and end in cont:
            cont = cont[: cont.index(end) + 1]
        pairs.append((prompt, cont))
    return pairs


def measure(judge, tokenizer, pairs: list[tuple[list[int], list[int]]], texts: list[str], builtin: bool) -> dict:
    start = start_token_id(tokenizer)
    pairs = [(p, c) for p, c in pairs if c]
    given, count = likelihood.continuation_nll(judge, pairs)
    alone, _ = likelihood.continuation_nll(judge, [([start], c) for _, c in pairs])
    row = {
        "judge_ppl_given_prompt": math.exp(given / count),
        "judge_ppl_alone": math.exp(alone / count),
        "adherence": math.exp((alone - given) / count),
        "entropy": text_metrics.mean_unigram_entropy([tokenizer.decode(c, skip_special_tokens=True) for _, c in pairs]),
    }
    if builtin:
        row["valid"] = sum(map(corpus.is_valid_story, texts)) / len(texts)
    return row


def adherence(args) -> list[dict]:
    checkpoint = models.load_checkpoint(args.checkpoint)
    if checkpoint.block_size:
        raise UsageError(f"{args.checkpoint} is a block-diffusion checkpoint; classifier-free guidance does not apply to it")
    if any(scale < 0 for scale in args.cfg_scales):
        raise UsageError(f"--cfg-scales {args.cfg_scales}: every scale must be >= 0")
    judge, judge_tokenizer = models.load_causal_lm(args.judge)
    tokenizer = checkpoint.tokenizer
    if not tokenization.same_tokenizer(tokenizer, judge_tokenizer):
        raise UsageError(f"--judge {args.judge} has another tokenizer than {args.checkpoint}; use the matched GPT-2")
    length = checkpoint.max_length
    builtin = args.text_file is None
    if args.text_file:
        prompts = text_prompts(tokenizer, args.text_file, args.num_prompts, args.prompt_tokens, length)
    elif (checkpoint.diffusion_config.corpus or "builtin").startswith("builtin"):
        prompts = builtin_prompts(tokenizer, args.num_prompts, length)
    else:
        raise UsageError(f"{args.checkpoint} is not a model of the built-in stories: give --text-file with held-out text")
    end = end_token_id(tokenizer) if checkpoint.line_by_line else None
    start = start_token_id(tokenizer)
    n = args.samples_per_prompt

    rows = []
    reference_pairs = [([start] + tokenizer(p.text, add_special_tokens=False)["input_ids"], p.reference) for p in prompts]
    reference_texts = [p.document for p in prompts]
    rows.append({"sampler": "held-out continuation", "passes": 0, **measure(judge, tokenizer, reference_pairs, reference_texts, builtin)})

    overrides = {k: v for k, v in (("strategy", args.strategy), ("steps", args.steps)) if v is not None}
    for scale in tqdm(args.cfg_scales, desc="scales"):
        pairs, texts, passes = [], [], 0
        for k, prompt in enumerate(prompts):
            settings = sampling.GenerationSettings(prefix=prompt.text, max_length=length, num_samples=n, seed=args.seed + k,
                                                   cfg_scale=scale, **overrides)
            out = sampling.generate(checkpoint, settings, progress=False)
            pairs += split_rows(out.ids, out.result.fixed, end)
            texts += out.texts
            passes += out.nfe
        label = "diffusion" + (f", CFG {scale:g}" if scale else ", no guidance")
        rows.append({"sampler": label, "passes": passes / len(prompts), **measure(judge, tokenizer, pairs, texts, builtin)})

    pairs, texts, passes = [], [], 0
    for k, prompt in enumerate(prompts):
        settings = sampling.GenerationSettings(prefix=prompt.text, max_length=length, num_samples=n, seed=args.seed + k)
        out = sampling.sample_autoregressive(judge, judge_tokenizer, settings)
        pairs += [(out.prompt, row if end is not None else [t for t in row if t != end_token_id(tokenizer)]) for row in out.generated]
        texts += out.texts
        passes += out.forward_passes
    rows.append({"sampler": "GPT-2 (the judge)", "passes": passes / len(prompts), **measure(judge, tokenizer, pairs, texts, builtin)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(AdherenceArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = adherence(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "cfg_adherence.csv", rows)
    print(tables.markdown_table(rows, list(rows[0])))
    return rows


if __name__ == "__main__":
    cli.run(main)
