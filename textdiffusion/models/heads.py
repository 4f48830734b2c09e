"""The LM head and positions of a masked LM: logits at chosen positions only, and how many positions it reads.
"""

import torch


def masked_logits(model, head, ids: torch.Tensor, attention_mask: torch.Tensor, where: torch.Tensor, **forward) -> torch.Tensor:
    """(where.sum(), vocab) logits at the `where` positions of one forward pass: with `head`
    (models.prediction_head) the encoder runs once and the head only at those positions; without, the whole model.
    `forward`: more arguments of the forward pass (block diffusion's position_ids)."""
    if head is None:
        return model(input_ids=ids, attention_mask=attention_mask, **forward).logits[where]
    hidden = model.base_model(input_ids=ids, attention_mask=attention_mask, **forward).last_hidden_state
    return head(hidden[where])


class Denoiser:
    """What the sampler asks of a model: logits at chosen positions of partly masked sequences.

    `block_size` is a block-diffusion model's own block size (its blocks are then sampled left to right, aligned
    as in training), None for a model of whole sequences. `reset()` forgets whatever was kept between calls (a
    block model's key/value cache) before a new batch of sequences.
    """

    block_size: int | None = None

    def __init__(self, model):
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits_at(self, ids: torch.Tensor, where: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(where.sum(), vocab) logits at the `where` positions of `ids` (both (batch, seq))."""
        raise NotImplementedError

    def reset(self) -> None:
        pass


class MaskedLM(Denoiser):
    """A plain masked LM as a denoiser: the encoder once per call, its LM head only at the positions asked for
    (`sparse`, when the head is known: the same logits, less work), else the model's full logits."""

    def __init__(self, model, sparse: bool = True):
        super().__init__(model)
        self.head = prediction_head(model) if sparse else None

    def logits_at(self, ids: torch.Tensor, where: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        attention_mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        return masked_logits(self.model, self.head, ids, attention_mask, where)


def as_denoiser(model, sparse: bool = True) -> Denoiser:
    """`model` itself if it is a Denoiser (a blocks.BlockModel), else the masked LM `model` wrapped as one."""
    return model if isinstance(model, Denoiser) else MaskedLM(model, sparse)


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
