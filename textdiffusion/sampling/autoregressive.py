"""The one autoregressive sampler: the matched GPT-2 drawn token by token with the same drawing rule.
"""

import inspect
import time
from dataclasses import dataclass

import torch

from textdiffusion.data.tokenization import (
    end_token_id,
    special_token_ids,
    start_token_id,
)
from textdiffusion.errors import SettingsError
from textdiffusion.models.heads import max_positions
from textdiffusion.sampling.drawing import draw_tokens
from textdiffusion.sampling.generation import synchronize, warm_up
from textdiffusion.sampling.settings import GenerationSettings


@dataclass
class ARGeneration:
    """Samples of a causal LM: `prompt` ids (start token first), each row's generated ids (up to and including
    the end token when it came), the texts (prompt + generation, special tokens dropped), the seconds after each
    forward pass (`times[0]` = 0, `times[k]` when token k was drawn) and the forward passes made."""

    prompt: list[int]
    generated: list[list[int]]
    texts: list[str]
    times: list[float]
    forward_passes: int

    @property
    def seconds(self) -> float:
        return self.times[-1]

    @property
    def generated_tokens(self) -> int:
        return sum(len(row) for row in self.generated)


@torch.no_grad()
def sample_autoregressive(model, tokenizer, settings: GenerationSettings) -> ARGeneration:
    """`settings.num_samples` continuations of `settings.prefix`, token by token with the KV cache, drawn by
    `settings.sampling` (greedy/topk/nucleus, temperature) with a generator seeded by `settings.seed`; each row
    stops at the end token, all stop at `settings.max_length` tokens (start token included). No special token is
    drawn inside the text except the end token that stops it, as in the diffusion sampler."""
    device = next(model.parameters()).device
    start_id, end_id = start_token_id(tokenizer), end_token_id(tokenizer)
    prompt = [start_id] + (tokenizer(settings.prefix, add_special_tokens=False)["input_ids"] if settings.prefix else [])
    budget = min(settings.max_length, max_positions(model)) - len(prompt)
    if budget < 1:
        raise SettingsError(f"the prompt is {len(prompt)} tokens for the GPT-2 model; max_length {settings.max_length} leaves no room")
    banned = torch.tensor([i for i in special_token_ids(tokenizer) if i != end_id], device=device, dtype=torch.long)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    model.eval()
    rows = settings.num_samples
    inputs, past = torch.tensor([prompt] * rows, device=device), None
    # transformers 5.24 renamed the key/value cache argument and output `cache` (past_key_values is deprecated).
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, times = [], [0.0]
    warm_up(model)  # as generation.generate does: both samplers' reported seconds start warm
    start = time.perf_counter()
    for _ in range(budget):
        out = model(input_ids=inputs, use_cache=True, **{cache_name: past})
        past = out[cache_name]
        logits = out.logits[:, -1].float()  # (rows, vocab)
        if banned.numel():
            logits = logits.index_fill(-1, banned, float("-inf"))
        token, _ = draw_tokens(logits, settings.sampling, settings.temperature, settings.top_k, settings.top_p, generator)
        token = token.masked_fill(done, end_id)
        tokens.append(token)
        synchronize(device)
        times.append(time.perf_counter() - start)
        done |= token == end_id
        if bool(done.all()):
            break
        inputs = token.view(rows, 1)
    drawn = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in range(rows)]
    generated = [row[: row.index(end_id) + 1] if end_id in row else row for row in drawn]
    texts = [
        tokenizer.decode(prompt[1:] + [i for i in row if i != end_id], skip_special_tokens=True).strip() for row in generated
    ]
    return ARGeneration(prompt, generated, texts, times, len(tokens))
