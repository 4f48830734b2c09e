"""MAUVE (Pillutla et al. 2021, `mauve-text`) between generated texts and held-out text, on features computed here
from a causal LM's hidden states (the matched GPT-2, the judge), so nothing is downloaded: each text's final-layer
hidden state at its last token, as MAUVE's own featurisation does with gpt2-large.
"""

import numpy as np
import torch

from textdiffusion.errors import SettingsError
from textdiffusion.models.heads import max_positions


@torch.no_grad()
def text_features(model, tokenizer, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """(texts, hidden size) float32: the last layer's hidden state at each text's last token, the text read after
    the start token and cut to the model's positions."""
    model.eval()
    device = next(model.parameters()).device
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    limit = max_positions(model)
    features = []
    for begin in range(0, len(texts), batch_size):
        rows = [([start] if start is not None else []) + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[begin : begin + batch_size]]
        rows = [row[:limit] for row in rows]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states[-1]
        last = mask.sum(1) - 1
        features.append(hidden[torch.arange(len(rows)), last.to(device)].float().cpu().numpy())
    return np.concatenate(features)


def mauve_score(p_features: np.ndarray, q_features: np.ndarray, seed: int = 25) -> float:
    """MAUVE between two sets of features (rows): about 1 for the same distribution, near 0 for disjoint ones."""
    import mauve

    p, q = np.asarray(p_features), np.asarray(q_features)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise SettingsError(f"MAUVE needs two sets of features of one width; got shapes {p.shape} and {q.shape}")
    if min(len(p), len(q)) < 2:
        raise SettingsError(f"MAUVE needs at least 2 texts on each side; got {len(p)} and {len(q)}")
    return float(mauve.compute_mauve(p_features=p, q_features=q, seed=seed, verbose=False, device_id=-1).mauve)


def available() -> bool:
    from importlib.util import find_spec

    return find_spec("mauve") is not None
