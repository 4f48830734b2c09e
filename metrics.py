"""Measurements: the ELBO perplexity bound of a masked-diffusion LM, the exact perplexity of a causal LM on the
same blocks, and metrics of generated samples (judge perplexity, entropy, distinct-n, repetition, validity).

The bound is MDLM's (Sahoo et al. 2024, https://arxiv.org/abs/2406.07524, eq. 10): for a time t, mask m(t) of
a sequence's maskable tokens exactly as training does (`data_collator.DiffusionCollator`), weight the summed
cross-entropy of the masked tokens by m'(t)/m(t) (1/t for the linear schedule), average over t and divide by the
number of scored tokens. It upper-bounds the negative log-likelihood per token, so exp(bound) is a perplexity
that can be compared with a causal LM's on the same tokens. train.py's `eval_elbo` is the same quantity estimated
with ten fixed times and the training prefix (`elbo_bound(..., fixed_times=EVAL_TIMES)` reproduces it).
"""

import csv
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import corpus
import loading
from data_collator import DiffusionCollator
from diffusion import bound_weight, diffusion_loss, elbo_weight, mask_fraction

logger = logging.getLogger(__name__)


@dataclass
class Perplexity:
    """Total negative log-likelihood (nats) of `tokens` tokens that spell `bytes` bytes of text."""

    total_nats: float
    tokens: int
    bytes: int
    exact: bool  # False for an upper bound (the diffusion ELBO)

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / max(self.tokens, 1)

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nats_per_token, 50.0))

    @property
    def bits_per_byte(self) -> float:
        return self.total_nats / math.log(2) / max(self.bytes, 1)

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}nats_per_token": self.nats_per_token,
            f"{prefix}ppl": self.ppl,
            f"{prefix}bits_per_byte": self.bits_per_byte,
            f"{prefix}tokens": self.tokens,
            f"{prefix}exact": self.exact,
        }


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _rows(data) -> torch.Tensor:
    """(rows, seq) ids from a tensor, a list of lists, or a `datasets.Dataset` with `input_ids`."""
    if isinstance(data, torch.Tensor):
        return data
    if hasattr(data, "column_names"):
        data = data["input_ids"]
    return torch.as_tensor(list(data))


def text_bytes(tokenizer, rows: torch.Tensor) -> int:
    """UTF-8 bytes of the text the rows spell (special tokens excluded): the denominator of bits per byte."""
    special = set(loading.special_token_ids(tokenizer))
    return sum(len(tokenizer.decode([i for i in row if i not in special]).encode("utf-8")) for row in rows.tolist())


# ----------------------------------------------------------------------------- the diffusion bound


def stratified_times(num_rows: int, num_t_samples: int, generator: torch.Generator) -> torch.Tensor:
    """(num_rows, K) times in (0, 1]: one in each of K equal strata, sharing one random offset per row.

    Stratified (low-discrepancy) times lower the variance of the t-average compared with K independent draws;
    t = (k + 1 - u) / K lies in (0, 1], like the times the collator draws in training.
    """
    u = torch.rand(num_rows, 1, generator=generator, dtype=torch.float64)
    k = torch.arange(num_t_samples, dtype=torch.float64)
    return ((k + 1 - u) / num_t_samples).float()


def elbo_bound(
    model,
    tokenizer,
    data,
    schedule: str = "linear",
    line_by_line: bool = False,
    num_t_samples: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    prefix_length: int = 0,
    prefix_policy: str = "fixed",
    fixed_times: torch.Tensor | None = None,
    progress=None,
) -> Perplexity:
    """MDLM's upper bound on the NLL of `data` (rows laid out by `loading.tokenize_documents`).

    Each row is scored at `num_t_samples` stratified times. With `fixed_times`, each row is scored once and
    row j of each batch gets fixed_times[j % len]: this is what train.py's evaluation does with its eval
    collator, so the two numbers agree exactly for the same rows, batch size, seed and prefix.
    The same seed gives the same times and the same masked positions, hence the same result.
    """
    model.eval()
    device = _device(model)
    rows = _rows(data)
    collator = DiffusionCollator(
        tokenizer, schedule=schedule, prefix_length=prefix_length, prefix_policy=prefix_policy,
        line_by_line=line_by_line, eval_times=fixed_times, seed=seed,
    )
    if fixed_times is None:
        times = stratified_times(len(rows), num_t_samples, torch.Generator().manual_seed(seed)).flatten()
        rows = rows.repeat_interleave(num_t_samples, dim=0)  # row i at its K times, one after another
    banned = torch.tensor(sorted({tokenizer.mask_token_id, tokenizer.pad_token_id, loading.start_token_id(tokenizer)}))
    weighted, scored = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        if fixed_times is None:
            collator.eval_times = times[start : start + batch_size]
        batch = collator([{"input_ids": row} for row in chunk])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            # The training loss's cross-entropy: <mask>, <pad> and <s> get no probability, as in train.py.
            _, ce, _ = diffusion_loss(logits, batch["labels"].to(device), batch["loss_weight"], batch["num_maskable"], banned_ids=banned)
        weight = bound_weight(schedule, batch["mask_time"], batch["mask_rate"])
        weighted += float((weight.to(device) * ce.double()).sum())
        scored += int(batch["num_maskable"].sum())
        if progress is not None:
            progress(len(chunk))
    copies = 1 if fixed_times is not None else num_t_samples
    tokens = round(scored / copies)  # distinct scored tokens; the bound per token is weighted / scored
    base = rows[::copies]
    return Perplexity(weighted / max(scored, 1) * tokens, tokens, text_bytes(tokenizer, base), exact=False)


# ----------------------------------------------------------------------------- causal LMs


@torch.no_grad()
def causal_nll(model, rows: torch.Tensor, attention_mask: torch.Tensor | None = None, batch_size: int = 64) -> tuple[float, int]:
    """(summed NLL in nats, scored tokens) of rows (batch, seq): every token after the first, given the ones before."""
    model.eval()
    device = _device(model)
    if attention_mask is None:
        attention_mask = torch.ones_like(rows)
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        ids = rows[start : start + batch_size].to(device)
        mask = attention_mask[start : start + batch_size].to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (batch, seq, vocab)
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100, reduction="sum")
        total += float(ce)
        count += int((labels != -100).sum())
    return total, count


def causal_perplexity(model, tokenizer, data, batch_size: int = 64) -> Perplexity:
    """Exact perplexity of a causal LM on rows laid out by `loading.tokenize_documents` (the first token is given)."""
    rows = _rows(data)
    if rows.size(1) > loading.max_positions(model):
        raise loading.UsageError(
            f"blocks of {rows.size(1)} tokens are longer than the causal LM allows ({loading.max_positions(model)}); "
            "lower --max-length"
        )
    total, count = causal_nll(model, rows, batch_size=batch_size)
    return Perplexity(total, count, text_bytes(tokenizer, rows), exact=True)


def same_tokenizer(a, b) -> bool:
    """True when both tokenizers give the same ids and layout tokens, so per-token numbers are comparable."""
    if a.get_vocab() != b.get_vocab():
        return False
    if (loading.start_token_id(a), loading.end_token_id(a)) != (loading.start_token_id(b), loading.end_token_id(b)):
        return False
    probe = "the red ball, 12 kites; Tom's hat!"
    return a(probe, add_special_tokens=False)["input_ids"] == b(probe, add_special_tokens=False)["input_ids"]


def judge_perplexity(judge, judge_tokenizer, texts: list[str], batch_size: int = 32) -> Perplexity:
    """Generative perplexity: the judge's exact perplexity of `<start> text <end>` for each text.

    The texts are retokenised with the judge's own tokenizer, so any causal LM can judge any model's samples.
    """
    start, end = loading.start_token_id(judge_tokenizer), loading.end_token_id(judge_tokenizer)
    limit = loading.max_positions(judge)
    encoded = judge_tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    seqs = [([start] + ids + [end])[:limit] for ids in encoded]
    width = max(len(s) for s in seqs)
    pad = judge_tokenizer.pad_token_id if judge_tokenizer.pad_token_id is not None else end
    rows = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    total, count = causal_nll(judge, rows, mask, batch_size)
    return Perplexity(total, count, sum(len(t.encode("utf-8")) for t in texts), exact=True)


# ----------------------------------------------------------------------------- sample metrics


def _tokens(text) -> list:
    return text.split() if isinstance(text, str) else list(text)


def unigram_entropy(text) -> float:
    """Entropy (nats) of the token frequencies within one sample (words of a string, or a list of ids)."""
    counts = Counter(_tokens(text))
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def mean_unigram_entropy(texts) -> float:
    return sum(unigram_entropy(t) for t in texts) / max(len(texts), 1)


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts, n: int) -> float:
    """Distinct n-grams over all n-grams of all samples (Li et al. 2016); 0 when there are none."""
    grams = [g for t in texts for g in _ngrams(_tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts, n: int = 3) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the same sample (pooled over samples).

    Degenerate loops ("the ball the ball the ball") score near 1; text without repeated phrases scores 0.
    """
    repeats = total = 0
    for text in texts:
        grams = _ngrams(_tokens(text), n)
        repeats += len(grams) - len(set(grams))
        total += len(grams)
    return repeats / total if total else 0.0


def story_metrics(texts: list[str], training_stories) -> dict:
    """Built-in corpus only: share of samples that are valid stories, and share valid and not in the training set."""
    seen = {" ".join(s.split()) for s in training_stories}
    valid = [corpus.is_valid_story(t) for t in texts]
    novel = [v and " ".join(t.split()) not in seen for t, v in zip(texts, valid)]
    n = max(len(texts), 1)
    return {"valid_rate": sum(valid) / n, "novel_valid_rate": sum(novel) / n}


def checkpoint_story_quality(checkpoint: str, num_samples: int = 256, seed: int = 1, threads: int | None = None) -> dict:
    """A checkpoint trained on the built-in corpus, sampled at generate.py's defaults: shares of valid and of
    well-formed stories among `num_samples` documents (one batch), of stories breaking each agreement rule
    (broken_A ... broken_P, see corpus.disagreeing_slots), and the forward passes it took."""
    from config import SamplingArguments
    from generate import load, run

    if threads:
        torch.set_num_threads(threads)
    args = SamplingArguments(checkpoint=checkpoint, num_samples=num_samples, seed=seed, hide_steps=True)
    model, tokenizer, settings = load(args)
    result, texts, _ = run(args, model, tokenizer, bool(settings.get("line_by_line")), progress=False)
    broken = [corpus.disagreeing_slots(text) for text in texts]
    quality = {
        "valid_rate": sum(b == set() for b in broken) / len(texts),
        "well_formed_rate": sum(b is not None for b in broken) / len(texts),
        "nfe": result.nfe,
    }
    # Which long-range rule the well-formed but invalid ones break (shares of all samples).
    for slot in "ABCOP":
        quality[f"broken_{slot}"] = sum(slot in b for b in broken if b) / len(texts)
    return quality


def sample_metrics(texts: list[str], judge=None, training_stories=None) -> dict:
    """Metrics of a list of generated texts. `judge` is (causal LM, tokenizer) or None."""
    result = {
        "entropy": mean_unigram_entropy(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "repetition": repetition_rate(texts),
    }
    if judge is not None:
        result["gen_ppl"] = judge_perplexity(*judge, texts).ppl
    if training_stories is not None:
        result.update(story_metrics(texts, training_stories))
    return result


# ----------------------------------------------------------------------------- sampling both kinds of model


@dataclass
class Samples:
    texts: list[str]
    seconds: float
    forward_passes: int  # per batch of samples
    tokens: int  # generated positions, all samples together

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def diffusion_samples(model, tokenizer, args, line_by_line: bool) -> Samples:
    """Samples from generate.run, the one generation loop; `args` is a config.SamplingArguments."""
    import generate

    result, texts, seconds = generate.run(args, model, tokenizer, line_by_line=line_by_line, progress=False)
    generated = int((result.trajectory[0].ids == tokenizer.mask_token_id).sum())
    return Samples(texts, seconds, result.nfe, generated)


@torch.no_grad()
def causal_samples(model, tokenizer, num_samples: int, max_length: int, seed: int = 0, top_k: int = 50,
                   temperature: float = 1.0, prefix: str = "") -> Samples:
    """Samples of a causal LM with top-k sampling and a KV cache: one forward pass per generated token."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class CountCalls(LogitsProcessor):
        calls = 0

        def __call__(self, input_ids, scores):
            CountCalls.calls += 1
            return scores

    start, end = loading.start_token_id(tokenizer), loading.end_token_id(tokenizer)
    ids = [start] + (tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [])
    inputs = torch.tensor([ids] * num_samples, device=_device(model))
    torch.manual_seed(seed)
    model.eval()
    began = time.perf_counter()
    out = model.generate(
        input_ids=inputs, attention_mask=torch.ones_like(inputs), do_sample=True, top_k=top_k, temperature=temperature,
        max_length=min(max_length, loading.max_positions(model)), eos_token_id=end,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end,
        logits_processor=LogitsProcessorList([CountCalls()]),
    )
    seconds = time.perf_counter() - began
    texts = []
    for row in out[:, len(ids):].tolist():
        row = row[: row.index(end)] if end in row else row
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    if prefix:
        texts = [f"{prefix} {t}".strip() for t in texts]
    return Samples(texts, seconds, CountCalls.calls, CountCalls.calls * num_samples)


# ----------------------------------------------------------------------------- one report for both models


def evaluation_rows(tokenizer, docs: list[str], max_length: int, line_by_line: bool):
    """The blocks training used for these documents (same tokenizer, layout and length)."""
    return _rows(loading.tokenize_documents(tokenizer, docs, max_length, line_by_line, "tokenize evaluation text"))


def report(
    diffusion_model,
    diffusion_tokenizer,
    ar_model=None,
    ar_tokenizer=None,
    texts_or_file: list[str] | str | None = None,
    *,
    diffusion_settings: dict | None = None,
    max_length: int | None = None,
    line_by_line: bool | None = None,
    num_t_samples: int = 8,
    max_documents: int = 500,
    sampling=None,
    judge=None,
    training_stories=None,
    seed: int = 0,
    batch_size: int = 64,
) -> list[dict]:
    """Held-out perplexity (bound vs exact), sample metrics, speed: one row per model plus the reference text.

    `texts_or_file`: documents, a .txt/.jsonl path, or None for the built-in corpus's validation stories.
    `diffusion_settings` is the checkpoint's diffusion_config.json: the layout, block length and schedule of the
    bound default to how the model was trained. `sampling` is a config.SamplingArguments (None: no samples);
    the AR model samples with its top-k and temperature. `judge` is (causal LM, tokenizer), by default the AR
    model. `training_stories` turns on the built-in corpus's validity/novelty rates (on by default there).
    """
    settings = diffusion_settings or {}
    line_by_line = bool(settings.get("line_by_line", False)) if line_by_line is None else line_by_line
    max_length = max_length or settings.get("max_length") or min(128, loading.max_positions(diffusion_model))
    schedule = settings.get("schedule", "linear")
    docs = load_evaluation_documents(texts_or_file, line_by_line, max_documents)
    if texts_or_file is None and training_stories is None:
        training_stories = corpus.generate_corpus(loading.BUILTIN_TRAIN_STORIES, seed=0)
    if max_length > loading.max_positions(diffusion_model):
        raise loading.UsageError(
            f"--max-length {max_length} is more than the masked LM's {loading.max_positions(diffusion_model)} positions"
        )
    judge = judge if judge is not None else ((ar_model, ar_tokenizer) if ar_model is not None else None)

    rows = evaluation_rows(diffusion_tokenizer, docs, max_length, line_by_line)
    logger.info("ELBO bound on %d blocks of %d tokens, %d times each", len(rows), max_length, num_t_samples)
    bound = elbo_bound(diffusion_model, diffusion_tokenizer, rows, schedule, line_by_line, num_t_samples, seed, batch_size)
    diff_row = {"model": "diffusion", **bound.as_dict()}
    table = [diff_row]
    if ar_model is not None:
        matched = same_tokenizer(diffusion_tokenizer, ar_tokenizer)
        if not matched:
            logger.warning("the tokenizers differ: the text is retokenised; compare bits per byte, not per token")
        ar_rows = rows if matched else evaluation_rows(ar_tokenizer, docs, max_length, line_by_line)
        ar_row = {"model": "autoregressive", **causal_perplexity(ar_model, ar_tokenizer, ar_rows, batch_size).as_dict()}
        diff_row["same_tokens"] = ar_row["same_tokens"] = matched
        table.append(ar_row)

    if sampling is not None:
        logger.info("sampling %d texts of %d tokens from each model", sampling.num_samples, sampling.max_length)
        diff = diffusion_samples(diffusion_model, diffusion_tokenizer, sampling, line_by_line)
        diff_row.update(_speed(diff), **sample_metrics(diff.texts, judge, training_stories), samples=diff.texts)
        if ar_model is not None:
            ar = causal_samples(ar_model, ar_tokenizer, sampling.num_samples, sampling.max_length, sampling.seed,
                                sampling.top_k, sampling.temperature, sampling.prefix)
            ar_row.update(_speed(ar), **sample_metrics(ar.texts, judge, training_stories), samples=ar.texts)
        table.append({"model": "reference text", **sample_metrics(docs[: sampling.num_samples], judge, training_stories)})
    return table


def load_evaluation_documents(texts_or_file, line_by_line: bool, max_documents: int | None = None) -> list[str]:
    """Documents from a list, a .txt/.jsonl file, or (None) the built-in corpus's validation stories."""
    if texts_or_file is None:
        return corpus.generate_corpus(max_documents or 500, seed=loading.BUILTIN_EVAL_SEED)
    if isinstance(texts_or_file, (str, Path)):
        docs = loading.read_documents(str(texts_or_file), line_by_line)
    else:
        docs = [d.strip() for d in texts_or_file if d.strip()]
        if not docs:
            raise loading.UsageError("the evaluation text is empty")
    return docs[:max_documents] if max_documents else docs


def _speed(samples: Samples) -> dict:
    return {"seconds": samples.seconds, "forward_passes": samples.forward_passes, "tokens_per_s": samples.tokens_per_second}


COLUMNS = (
    ("ppl", "ppl", "{:.3f}"),
    ("nats_per_token", "nats/tok", "{:.4f}"),
    ("bits_per_byte", "bits/byte", "{:.4f}"),
    ("gen_ppl", "gen ppl", "{:.3f}"),
    ("entropy", "entropy", "{:.3f}"),
    ("distinct_1", "dist-1", "{:.3f}"),
    ("distinct_2", "dist-2", "{:.3f}"),
    ("distinct_3", "dist-3", "{:.3f}"),
    ("repetition", "rep-3", "{:.3f}"),
    ("valid_rate", "valid", "{:.3f}"),
    ("novel_valid_rate", "novel", "{:.3f}"),
    ("forward_passes", "passes", "{}"),
    ("seconds", "seconds", "{:.2f}"),
    ("tokens_per_s", "tok/s", "{:.0f}"),
)


def format_table(table: list[dict]) -> str:
    """A plain-text table of `report`'s rows; a column is shown when any row has it."""
    columns = [c for c in COLUMNS if any(c[0] in row for row in table)]
    header = ["model"] + [title + (" (bound)" if key == "ppl" and not all(r.get("exact", True) for r in table) else "")
                          for key, title, _ in columns]
    lines = [header]
    for row in table:
        name = row["model"] + ("" if row.get("exact", True) or "ppl" not in row else " *")
        lines.append([name] + [fmt.format(row[key]) if key in row else "-" for key, _, fmt in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))) for line in lines)
    if any(not r.get("exact", True) for r in table):
        text += "\n* an upper bound on perplexity (the ELBO, MDLM); causal-LM perplexities are exact."
    return text



def write_csv(path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Write result rows (dicts) as a CSV with a header; the experiments all report this way."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], columns: list[str], cell=None) -> str:
    """Result rows as a markdown table. `cell(column, value)` formats one value; by default floats get two
    decimals and a missing or NaN value is '-'."""

    def default(column, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    cell = cell or default
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
