"""Generative frontiers: judge perplexity against entropy over a temperature sweep, per strategy and for GPT-2,
with MAUVE against held-out text; one plot per corpus.

    python -m experiments.frontier --checkpoints runs/defaults_table/shakespeare/diffusion-seed42/final-model \
        --ar-checkpoints runs/defaults_table/shakespeare/ar-seed42/final-model \
        --validation-file runs/defaults_table/shakespeare/data/test.txt --name shakespeare

A single judge-perplexity figure can be gamed by low entropy; the two are parts of one divergence and belong on one
curve (arXiv 2604.02718). For each pair of a diffusion checkpoint and its matched GPT-2 (one pair per training
seed, as experiments.defaults_table trains them), every strategy of --strategies at every --temperatures draws
--num-samples texts of --max-length tokens in --steps passes (default L/4, generate.py's), and so does the GPT-2
(token by token, cached). Each set is scored by that GPT-2 as judge (perplexity of the samples), by its unigram
entropy, and by MAUVE against as many held-out blocks of the same length, on the judge's features
(metrics.mauve_score). Reported per setting: min / median / max over the pairs; the held-out text's own judge
perplexity and entropy are the target point. Writes frontier.csv, frontier.md and frontier.png into --output-dir;
each pair's rows are kept in pairs/ there and reused when the same pair is run again with the same settings (so pairs
can be measured as their models become ready, then put together).
"""

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from experiments.helpers import tables
from textdiffusion import cli, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.metrics import evaluation, mauve_score, text_metrics
from textdiffusion.sampling.autoregressive import sample_autoregressive

logger = logging.getLogger(__name__)


@dataclass
class FrontierArguments:
    checkpoints: list[str] = field(default_factory=list, metadata={"help": "Diffusion final-model folders, one per training seed."})
    ar_checkpoints: list[str] = field(default_factory=list, metadata={"help": "Their matched GPT-2 final-models, in the same order (each also judges its pair's samples)."})
    validation_file: str = field(default="", metadata={"help": "Held-out text (never the training split): the reference blocks."})
    name: str = field(default="corpus", metadata={"help": "The corpus's name in the table and plot."})
    strategies: list[str] = field(default_factory=lambda: ["auto", "confidence", "random"], metadata={"help": "Diffusion strategies to sweep."})
    temperatures: list[float] = field(default_factory=lambda: [0.7, 0.85, 1.0, 1.15], metadata={"help": "Softmax temperatures (> 0), top-k 50 sampling."})
    steps: int | None = field(default=None, metadata={"help": "Diffusion passes per sample. Default: max_length // 4 (generate.py's)."})
    max_length: int = field(default=128, metadata={"help": "Tokens per sample (start token included), and per reference block."})
    num_samples: int = field(default=128, metadata={"help": "Samples per setting and reference blocks."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (the same for every setting)."})
    threads: int | None = field(default=None, metadata={"help": "torch threads."})
    output_dir: str = field(default="runs/frontier", metadata={"help": "Where frontier.csv, .md and .png are written."})


def check(args) -> None:
    if not args.checkpoints or len(args.checkpoints) != len(args.ar_checkpoints):
        raise UsageError(f"--checkpoints ({len(args.checkpoints)}) and --ar-checkpoints ({len(args.ar_checkpoints)}) must be pairs, at least one")
    if not Path(args.validation_file).is_file():
        raise UsageError(f"--validation-file {args.validation_file or '(none)'}: no such file")
    if bad := [t for t in args.temperatures if not t > 0]:
        raise UsageError(f"--temperatures {bad[0]} must be more than 0")
    if bad := [s for s in args.strategies if s != "auto" and s not in sampling.STRATEGIES]:
        raise UsageError(f"--strategies {bad[0]} is unknown; choose any of auto, {', '.join(sampling.STRATEGIES)}")
    if args.num_samples < 2:
        raise UsageError(f"--num-samples {args.num_samples} must be at least 2 (MAUVE compares sets)")
    if args.steps is not None and not 1 <= args.steps <= args.max_length:
        raise UsageError(f"--steps {args.steps} must be in 1..--max-length {args.max_length}")


def measure(texts: list[str], judge, reference_features) -> dict:
    """Judge perplexity, unigram entropy and MAUVE against the reference of one set of samples."""
    figures = text_metrics.sample_metrics(texts, judge)
    with torch.no_grad():
        features = mauve_score.text_features(*judge, texts)
    return {"gen_ppl": figures["gen_ppl"], "entropy": figures["entropy"],
            "mauve": mauve_score.mauve_score(features, reference_features)}


def pair_rows(args, seed_index: int, checkpoint_path: str, ar_path: str) -> list[dict]:
    """Every setting's figures for one pair, and the held-out reference's."""
    checkpoint = models.load_checkpoint(checkpoint_path)
    ar_model, ar_tokenizer = models.load_causal_lm(ar_path)
    judge = (ar_model.eval(), ar_tokenizer)
    reference = evaluation.held_out_texts(checkpoint.tokenizer, args.validation_file, args.max_length, args.num_samples)
    with torch.no_grad():
        reference_features = mauve_score.text_features(*judge, reference)
    figures = text_metrics.sample_metrics(reference, judge)
    rows = [{"pair": seed_index, "model": "held-out text", "temperature": None, "gen_ppl": figures["gen_ppl"],
             "entropy": figures["entropy"], "mauve": 1.0}]
    common = {"max_length": args.max_length, "num_samples": args.num_samples, "seed": args.seed, "sampling": "topk"}
    for temperature in args.temperatures:
        for strategy in args.strategies:
            settings = sampling.GenerationSettings(**common, strategy=strategy, temperature=temperature, steps=args.steps)
            out = sampling.generate(checkpoint, settings, progress=False)
            name = strategy if strategy != "auto" else f"auto ({out.settings.strategy})"
            rows.append({"pair": seed_index, "model": f"diffusion {name}", "temperature": temperature,
                         "passes": out.nfe, **measure(out.texts, judge, reference_features)})
        ar_out = sample_autoregressive(ar_model, ar_tokenizer, sampling.GenerationSettings(**common, temperature=temperature))
        rows.append({"pair": seed_index, "model": "GPT-2", "temperature": temperature, "passes": None,
                     **measure(ar_out.texts, judge, reference_features)})
        logger.info("pair %d, temperature %g done", seed_index, temperature)
    return rows


def cached_pair_rows(args, index: int, checkpoint: str, ar: str, folder: Path) -> list[dict]:
    """pair_rows, kept in FOLDER under a name made of the pair and every setting that shapes its rows."""
    settings = {k: v for k, v in asdict(args).items() if k not in ("checkpoints", "ar_checkpoints", "output_dir", "threads", "name")}
    key = json.dumps([str(Path(checkpoint).resolve()), str(Path(ar).resolve()), settings], sort_keys=True)
    path = folder / f"pair-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        rows = json.loads(path.read_text())
    else:
        rows = pair_rows(args, index, checkpoint, ar)
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows))
    return [{**row, "pair": index} for row in rows]


def summary(rows: list[dict]) -> list[dict]:
    """min / median / max over the pairs of each (model, temperature)."""
    keys = list(dict.fromkeys((row["model"], row["temperature"]) for row in rows))
    out = []
    for model, temperature in keys:
        group = [row for row in rows if (row["model"], row["temperature"]) == (model, temperature)]
        cell = lambda key: "/".join(f"{v:.3g}" for v in tables.min_median_max([row[key] for row in group]))
        passes = {row.get("passes") for row in group} - {None}
        out.append({"model": model, "temperature": "-" if temperature is None else f"{temperature:g}", "pairs": len(group),
                    "passes": "/".join(map(str, sorted(passes))) or "-", "judge ppl": cell("gen_ppl"),
                    "entropy": cell("entropy"), "MAUVE": cell("mauve")})
    return out


def plot(rows: list[dict], name: str, path: Path) -> None:
    """Judge perplexity (log) against entropy, medians over the pairs, one line per model over the temperatures."""
    plt = tables.pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for model in dict.fromkeys(row["model"] for row in rows):
        temperatures = sorted({row["temperature"] for row in rows if row["model"] == model}, key=lambda t: -1 if t is None else t)
        points = []
        for temperature in temperatures:
            group = [row for row in rows if row["model"] == model and row["temperature"] == temperature]
            points.append((tables.min_median_max([r["entropy"] for r in group])[1], tables.min_median_max([r["gen_ppl"] for r in group])[1]))
        xs, ys = zip(*points)
        if model == "held-out text":
            axis.scatter(xs, ys, marker="*", s=160, color="black", label=model, zorder=3)
        else:
            axis.plot(xs, ys, marker="o", linewidth=2 if model == "GPT-2" else 1.2, color="black" if model == "GPT-2" else None, label=model)
            axis.annotate(f"T={temperatures[0]:g}", points[0], fontsize=7, textcoords="offset points", xytext=(4, -8))
    axis.set_yscale("log")
    axis.set_xlabel("unigram entropy of the samples (nats)")
    axis.set_ylabel("judge perplexity (matched GPT-2)")
    axis.set_title(f"{name}: temperature sweeps (medians over the pairs)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    tables.save_figure(figure, path)


def main(argv=None):
    (args,) = cli.parse(cli.parser_for((FrontierArguments,), __doc__.splitlines()[0]), argv)
    cli.log_to_stderr()
    check(args)
    if not mauve_score.available():
        raise UsageError("MAUVE needs mauve-text: pip install -e '.[eval]'")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    rows = []
    for index, (checkpoint, ar) in enumerate(zip(args.checkpoints, args.ar_checkpoints)):
        rows += cached_pair_rows(args, index, checkpoint, ar, out / "pairs")
    tables.write_csv(out / "frontier.csv", rows, list(dict.fromkeys(key for row in rows for key in row)))
    table = tables.markdown_table(summary(rows), ["model", "temperature", "pairs", "passes", "judge ppl", "entropy", "MAUVE"])
    (out / "frontier.md").write_text(table + "\n")
    plot(rows, args.name, out / "frontier.png")
    print(table)
    return rows


if __name__ == "__main__":
    cli.run(main)
