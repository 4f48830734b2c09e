"""Models built from a config for training from scratch: the masked LM of each architecture, or the matched GPT-2.
"""

from transformers import (
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    ModernBertConfig,
    ModernBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
)

from textdiffusion.errors import SettingsError

# (hidden size, layers, heads, feed-forward size). base is roberta-base / distilroberta-base's width.
MODEL_SIZES = {"tiny": (128, 4, 4, 512), "small": (256, 6, 4, 1024), "base": (768, 12, 12, 3072)}


# Masked-LM architectures train.py can build from a config. roberta normalises after each block (post-LN, as
# the hub's BERT/RoBERTa), roberta-prelayernorm before it (as GPT-2); both learn absolute positions. modernbert
# is pre-LN with rotary positions and a gated MLP (its intermediate size is 2/3 of the others', so that the
# parameter count stays that of the same-size GPT-2). deberta (DeBERTa-v2) adds learned absolute positions to its
# input like roberta and also attends by relative position like modernbert: copying a word from wherever it stood
# needs relative positions, and deciding where a document ends when everything is masked needs absolute ones.
ARCHITECTURES = ("roberta", "roberta-prelayernorm", "modernbert", "deberta")


ROBERTA_CLASSES = {
    "roberta": (RobertaConfig, RobertaForMaskedLM),
    "roberta-prelayernorm": (RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM),
}


def build_model(
    objective: str, size: str, tokenizer, max_length: int, dropout: float = 0.0, architecture: str = "roberta",
    tie_word_embeddings: bool = True, initializer_range: float | None = None,
):
    """A new model of `size` for `tokenizer`: a masked LM of `architecture`, or GPT-2 with the same width and depth."""
    hidden, layers, heads, ffn = MODEL_SIZES[size]
    common = dict(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tie_word_embeddings,
        **({"initializer_range": initializer_range} if initializer_range else {}),
    )
    if objective == "ar":
        config = GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn, n_positions=max_length, **common,
            pad_token_id=tokenizer.pad_token_id, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        )
        return GPT2LMHeadModel(config)
    if architecture not in ARCHITECTURES:
        raise SettingsError(f"architecture {architecture!r} is unknown; choose one of {', '.join(ARCHITECTURES)}")
    if architecture == "deberta":
        config = DebertaV2Config(
            # Position projections shared with the content ones (as DeBERTa-v3), and a feed-forward layer 1/16
            # narrower for the relative-position table: the parameter count stays that of the same-size GPT-2.
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn * 15 // 16,
            max_position_embeddings=max_length, relative_attention=True, position_biased_input=True,
            pos_att_type=["p2c", "c2p"], max_relative_positions=max_length, share_att_key=True, type_vocab_size=0,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=tokenizer.pad_token_id,
            **common,
        )
        return DebertaV2ForMaskedLM(config)
    if architecture == "modernbert":
        config = ModernBertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn * 2 // 3,
            max_position_embeddings=max_length, layer_types=["full_attention"] * layers,
            embedding_dropout=dropout, mlp_dropout=dropout, attention_dropout=dropout,
            pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.eos_token_id,
            **common,
        )
        return ModernBertForMaskedLM(config)
    config_class, model_class = ROBERTA_CLASSES[architecture]
    config = config_class(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max_length + tokenizer.pad_token_id + 1,
        type_vocab_size=1,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
        **common,
    )
    return model_class(config)
