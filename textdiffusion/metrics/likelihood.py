"""Likelihood: the ELBO perplexity bound of a masked-diffusion LM, the exact perplexity of a causal LM on the same
blocks, and a judge's perplexity of generated texts.

The bound is MDLM's (Sahoo et al. 2024, https://arxiv.org/abs/2406.07524, eq. 10): for a time t, mask m(t) of
a sequence's maskable tokens through the forward process training uses (`masking.forward.ForwardProcess`), weight
the summed cross-entropy of the masked tokens by m'(t)/(share masked) (MDLM's m'(t)/m(t) with the share really
masked, `masking.bound_weight`; n/k for the linear schedule), average over t and divide by the number of scored
tokens. It upper-bounds the negative log-likelihood per token, so exp(bound) is a perplexity
that can be compared with a causal LM's on the same tokens. Both are per document token: on line-by-line rows the
end tokens that fill a row after the document's own end are not counted (`forward.filler_positions`). train.py's
`eval_elbo` is the same quantity estimated with one antithetic draw per row and the training prefix
(`elbo_bound(..., antithetic=True)` reproduces it); both are unbiased.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from textdiffusion.blocks.training import masked_logits
from textdiffusion.data.tokenization import (
    end_token_id,
    special_token_ids,
    start_token_id,
)
from textdiffusion.errors import SettingsError
from textdiffusion.masking.forward import ForwardProcess, antithetic_times, filler_positions
from textdiffusion.masking.loss import masked_diffusion_loss
from textdiffusion.models.heads import max_positions


@dataclass
class Perplexity:
    """Total negative log-likelihood (nats) of `tokens` tokens that spell `bytes` bytes of text."""

    total_nats: float
    tokens: int
    bytes: int
    exact: bool  # False for an upper bound (the diffusion ELBO)
    stderr_nats: float | None = None  # Monte Carlo standard error of total_nats (an estimated bound); None if exact

    @property
    def nats_per_token_stderr(self) -> float | None:
        return None if self.stderr_nats is None else self.stderr_nats / max(self.tokens, 1)

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
            **({f"{prefix}nats_per_token_stderr": self.nats_per_token_stderr} if self.stderr_nats is not None else {}),
        }


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def as_rows(data) -> torch.Tensor:
    """(rows, seq) ids from a tensor, a list of lists, or a `datasets.Dataset` with `input_ids`."""
    if isinstance(data, torch.Tensor):
        return data
    if hasattr(data, "column_names"):
        data = data["input_ids"]
    return torch.as_tensor(list(data))


def text_bytes(tokenizer, rows: torch.Tensor) -> int:
    """UTF-8 bytes of the text the rows spell (special tokens excluded): the denominator of bits per byte."""
    special = set(special_token_ids(tokenizer))
    return sum(len(tokenizer.decode([i for i in row if i not in special]).encode("utf-8")) for row in rows.tolist())


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
    antithetic: bool = False,
    progress=None,
    block_size: int | None = None,
) -> Perplexity:
    """MDLM's upper bound on the NLL of `data` (rows laid out by `tokenize_documents`), per document token.

    With `block_size` (a block-diffusion model) the bound of BD3-LM: the sum over blocks of each block's
    masked-diffusion bound given the clean blocks before it, each block at its own time (doubled_forward).

    Each row is scored at `num_t_samples` stratified times; the result carries the Monte Carlo standard error
    (from the spread of each row's draws). With `antithetic`, each row is scored once and a batch's rows take
    `forward.antithetic_times` from the masking stream: what train.py's evaluation does with its eval collator, so
    the two numbers agree exactly for the same rows, batch size, seed and prefix (both unbiased). The same seed
    gives the same times and the same masked positions, hence the same result. On line-by-line rows the end tokens
    that fill a row after its document's end pay their nats (the model writes them) but are not counted as tokens.
    """
    model.eval()
    device = model_device(model)
    rows = as_rows(data)
    forward = ForwardProcess.for_tokenizer(
        tokenizer, line_by_line, schedule=schedule, prefix_length=prefix_length, prefix_policy=prefix_policy,
        block_size=block_size,
    )
    # The masking stream: seeded like train.py's eval collator, so with `antithetic` both mask the same positions.
    generator = torch.Generator().manual_seed(seed)
    copies = 1 if antithetic else num_t_samples
    if not antithetic:
        times = stratified_times(len(rows), num_t_samples, torch.Generator().manual_seed(seed)).flatten()
        rows = rows.repeat_interleave(num_t_samples, dim=0)  # row i at its K times, one after another
    banned = unscored_ids(tokenizer)
    end_id = end_token_id(tokenizer)
    draws, counted = [], 0  # each row copy's weighted nats; maskable document tokens over all copies
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        maskable = forward.maskable(chunk, generator)
        units = forward.num_units(chunk)
        if antithetic:
            chunk_times = antithetic_times(units, generator)
        else:  # every block of a row's copy at that copy's time (one unit per row without blocks)
            chunk_times = times[start : start + batch_size].repeat_interleave(units // len(chunk))
        masked = forward.mask_units(chunk, maskable, chunk_times, generator)
        weight = masked.weight  # (units,) float64
        with torch.no_grad():
            ids, attention = masked.model_inputs(chunk != tokenizer.pad_token_id)
            logits, targets, unit = masked_logits(model, ids.to(device), attention.long().to(device), masked.labels.to(device), block_size)
            # The training loss's cross-entropy: <mask>, <pad> and <s> get no probability, as in train.py.
            _, ce, _ = masked_diffusion_loss(logits, targets, unit, weight, masked.num_maskable, banned_ids=banned)
        draws.append((weight.to(device) * ce.double()).cpu().view(len(chunk), -1).sum(-1))
        filler = filler_positions(chunk, end_id) & maskable if line_by_line else torch.zeros_like(maskable)
        counted += int(maskable.sum() - filler.sum())
        if progress is not None:
            progress(len(chunk))
    draws = torch.cat(draws).view(-1, copies) if draws else torch.zeros(0, copies, dtype=torch.float64)
    total = float(draws.sum()) / copies
    # Each row's mean over its K draws estimates that row's bound; the rows are fixed, only the draws are random.
    stderr = math.sqrt(float((draws.var(dim=1, unbiased=True) / copies).sum())) if copies > 1 else None
    base = rows[::copies]
    return Perplexity(total, round(counted / copies), text_bytes(tokenizer, base), exact=False, stderr_nats=stderr)


def unscored_ids(tokenizer) -> torch.Tensor:
    """Ids that get no probability in the bound, as in the training loss: <mask>, <pad> and <s>."""
    return torch.tensor(sorted({tokenizer.mask_token_id, tokenizer.pad_token_id, start_token_id(tokenizer)}))


def causal_nll(model, rows: torch.Tensor, attention_mask: torch.Tensor | None = None, batch_size: int = 64) -> tuple[float, int]:
    """(summed NLL in nats, scored tokens) of rows (batch, seq): every token after the first, given the ones before
    (a right-padded row is scored up to its last attended token)."""
    lengths = (attention_mask.sum(-1) if attention_mask is not None else torch.full((len(rows),), rows.size(1))).tolist()
    return continuation_nll(model, [(row[:1], row[1:n]) for row, n in zip(rows.tolist(), lengths)], batch_size)


@torch.no_grad()
def continuation_nll(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 64) -> tuple[float, int]:
    """(summed NLL in nats, scored tokens) of each continuation given its context, for (context ids, continuation
    ids) pairs: only the continuation's tokens are scored. The context must hold at least one token (the start
    token), since a causal LM predicts every token from the ones before it."""
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = [(list(c), list(x)) for c, x in pairs[start : start + batch_size]]
        if any(not c for c, _ in chunk):
            raise ValueError("every context needs at least one token")
        width = max(len(c) + len(x) for c, x in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (context, cont) in enumerate(chunk):
            row = context + cont
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, len(context) : len(row)] = torch.tensor(cont, dtype=torch.long)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        labels = labels[:, 1:].to(device)
        total += float(F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
    return total, count


def causal_perplexity(model, tokenizer, data, batch_size: int = 64, line_by_line: bool = False) -> Perplexity:
    """Exact perplexity of a causal LM on rows laid out by `tokenize_documents` (the first token is given), per
    document token: on line-by-line rows the end tokens that fill a row after its document's end are not scored
    (a causal LM stops at the end token)."""
    rows = as_rows(data)
    if rows.size(1) > max_positions(model):
        raise SettingsError(
            f"blocks of {rows.size(1)} tokens are longer than the causal LM allows ({max_positions(model)}); "
            "lower max_length"
        )
    # The filler is a row's tail, so a row is scored up to its document's end token.
    scored = ~filler_positions(rows, end_token_id(tokenizer)) if line_by_line else None
    total, count = causal_nll(model, rows, scored, batch_size=batch_size)
    return Perplexity(total, count, text_bytes(tokenizer, rows), exact=True)


def judge_perplexity(judge, judge_tokenizer, texts: list[str], batch_size: int = 32) -> Perplexity:
    """Generative perplexity: the judge's exact perplexity of `<start> text <end>` for each text.

    The texts are retokenised with the judge's own tokenizer, so any causal LM can judge any model's samples.
    """
    start, end = start_token_id(judge_tokenizer), end_token_id(judge_tokenizer)
    limit = max_positions(judge)
    encoded = judge_tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    seqs = [([start] + ids + [end])[:limit] for ids in encoded]
    width = max(len(s) for s in seqs)
    pad = judge_tokenizer.pad_token_id if judge_tokenizer.pad_token_id is not None else end
    rows = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    total, count = causal_nll(judge, rows, mask, batch_size)
    return Perplexity(total, count, sum(len(t.encode("utf-8")) for t in texts), exact=True)


def continuation_rows(tokenizer, pairs, length: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Rows `<s> context continuation <mask>...` of `length` tokens, one per (context ids, continuation ids) pair,
    and each continuation's (start, end) positions. A context too long is cut from the left; positions after the
    continuation stay masked (the text that would follow is unknown, as a model of full rows expects)."""
    start, mask = start_token_id(tokenizer), tokenizer.mask_token_id
    rows, spans = [], []
    for context, continuation in pairs:
        continuation = list(continuation)
        if not 1 <= len(continuation) <= length - 1:
            raise SettingsError(f"a continuation of {len(continuation)} tokens does not fit in {length - 1} positions after <s>")
        context = list(context)[max(0, len(context) - (length - 1 - len(continuation))):]
        row = [start, *context, *continuation]
        spans.append((len(row) - len(continuation), len(row)))
        rows.append(row + [mask] * (length - len(row)))
    return torch.tensor(rows, dtype=torch.long), spans


@torch.no_grad()
def continuation_bound(model, tokenizer, pairs, length: int, mc_num: int = 128, seed: int = 0,
                       batch_size: int = 64) -> list[tuple[float, float]]:
    """Per (context ids, continuation ids) pair, (a Monte Carlo estimate of the masked-diffusion upper bound on
    -log p(continuation | context) in nats, its standard error).

    The row is `continuation_rows`'. Draw j of `mc_num` masks k_j of the n continuation tokens (k_j stratified over
    1..n: k_j = 1 + floor((j + u_j) n / mc_num)), chosen uniformly, and counts n / k_j times their summed
    cross-entropy: the any-order autoregressive bound that `elbo_bound` estimates with the same n / k weight
    (LLaDA's conditional estimator, with stratified counts). <mask>, <pad> and <s> get no probability, as in
    training."""
    if mc_num < 1:
        raise SettingsError(f"mc_num {mc_num} must be 1 or more")
    model.eval()
    device = model_device(model)
    rows, spans = continuation_rows(tokenizer, pairs, length)
    generator = torch.Generator().manual_seed(seed)
    banned = unscored_ids(tokenizer)
    draws, owners, weights = [], [], []
    for index, (row, (first, last)) in enumerate(zip(rows, spans)):
        n = last - first
        counts = 1 + ((torch.arange(mc_num) + torch.rand(mc_num, generator=generator)) * n / mc_num).long().clamp(max=n - 1)
        for k in counts.tolist():
            chosen = first + torch.randperm(n, generator=generator)[:k]
            masked = row.clone()
            masked[chosen] = tokenizer.mask_token_id
            draws.append((masked, chosen))
            owners.append(index)
            weights.append(n / k)
    nats = torch.zeros(len(draws), dtype=torch.float64)
    for begin in range(0, len(draws), batch_size):
        chunk = draws[begin : begin + batch_size]
        ids = torch.stack([masked for masked, _ in chunk])
        labels = torch.full_like(ids, -100)
        for offset, (_, chosen) in enumerate(chunk):
            labels[offset, chosen] = rows[owners[begin + offset]][chosen]
        # The LM head only at the masked positions, as in training.
        logits, targets, unit = masked_logits(model, ids.to(device), torch.ones_like(ids).to(device), labels.to(device), None)
        logits = logits.float().index_fill(-1, banned.to(device), float("-inf"))
        token_nats = F.cross_entropy(logits, targets, reduction="none").double().cpu()
        nats[begin : begin + len(chunk)] = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, unit.cpu(), token_nats)
    estimates = (nats * torch.tensor(weights, dtype=torch.float64)).view(len(pairs), mc_num)
    spread = estimates.std(dim=1, unbiased=True) / math.sqrt(mc_num) if mc_num > 1 else torch.full((len(pairs),), float("nan"))
    return [(float(mean), float(error)) for mean, error in zip(estimates.mean(dim=1), spread)]


@torch.no_grad()
def greedy_continuation(model, tokenizer, pairs, length: int, batch_size: int = 64) -> list[bool]:
    """Whether greedy confidence decoding (every continuation position masked; each pass fixes the most certain
    one to its most likely token) writes exactly each pair's continuation: lm-eval's is_greedy. Rows are decoded
    `batch_size` at a time, each with its own number of passes."""
    model.eval()
    device = model_device(model)
    rows, spans = continuation_rows(tokenizer, pairs, length)
    banned = unscored_ids(tokenizer)
    columns = torch.arange(length)
    answers = []
    for begin in range(0, len(rows), batch_size):
        targets = rows[begin : begin + batch_size]
        span = torch.tensor([[first, last] for first, last in spans[begin : begin + batch_size]])
        inside = (columns >= span[:, :1]) & (columns < span[:, 1:])  # (batch, length): the continuations
        ids = targets.masked_fill(inside, tokenizer.mask_token_id)
        for _ in range(int(inside.sum(1).max())):
            open_positions = inside & (ids == tokenizer.mask_token_id)
            if not open_positions.any():
                break
            logits = model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device)).logits.float().cpu()
            logits[..., banned] = float("-inf")
            probs, best = logits.softmax(-1).max(-1)
            pick = probs.masked_fill(~open_positions, -1.0).argmax(-1)  # (batch,) each row's most certain open position
            rows_open = open_positions.any(1)
            chosen = torch.arange(len(ids))[rows_open]
            ids[chosen, pick[rows_open]] = best[chosen, pick[rows_open]]
        answers += ((ids == targets) | ~inside).all(1).tolist()
    return answers
