"""The LM head and positions of a masked LM: logits at chosen positions only, and how many positions it reads.
"""

import torch


def masked_logits(model, head, ids: torch.Tensor, attention_mask: torch.Tensor, where: torch.Tensor, **forward) -> torch.Tensor:
    """(where.sum(), vocab) logits at the `where` positions of one forward pass: with `head`
    (models.prediction_head) the encoder runs once and the head only at those positions; without, the whole model.
    `forward`: more arguments of the forward pass (block diffusion's position_ids)."""
    if hasattr(model, "logits_at"):  # a blocks.BlockModel: the current block over the cached prefix
        return model.logits_at(head, ids, where)
    if head is None:
        return model(input_ids=ids, attention_mask=attention_mask, **forward).logits[where]
    hidden = model.base_model(input_ids=ids, attention_mask=attention_mask, **forward).last_hidden_state
    return head(hidden[where])


def prediction_head(model):
    """The function that turns a masked LM's last hidden states (..., hidden) into logits (..., vocab), so logits
    can be computed for some positions only; None for a model whose head is not known (use model(...).logits).
    RoBERTa and DeBERTa: lm_head / cls; ModernBERT: head, then decoder."""
    for name in ("lm_head", "cls", "head"):
        module = getattr(model, name, None)
        if module is not None:
            if name == "head":
                return lambda hidden: model.decoder(module(hidden))
            return module
    return None


# Model types whose position ids count from padding_idx + 1 (RoBERTa's layout), so padding_idx + 1 positions are reserved.
PADDING_OFFSET_POSITIONS = ("roberta", "roberta-prelayernorm", "xlm-roberta", "camembert")


def max_positions(model) -> int:
    """Longest sequence the model's position embeddings allow (RoBERTa reserves padding_idx + 1 of them)."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9
    if config.model_type in PADDING_OFFSET_POSITIONS:
        limit -= config.pad_token_id + 1
    return limit
