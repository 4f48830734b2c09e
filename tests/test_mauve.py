"""MAUVE on features the project computes itself (the judge's hidden states): nothing downloaded."""

import numpy as np
import pytest

from textdiffusion.data import corpus
from textdiffusion.errors import SettingsError
from textdiffusion.metrics import mauve_score


def test_identical_sets_score_about_one_and_disjoint_ones_near_zero():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(300, 8))
    assert mauve_score.mauve_score(p, p.copy()) > 0.99
    assert mauve_score.mauve_score(p, rng.normal(size=(300, 8))) > 0.8  # the same distribution, other draws
    assert mauve_score.mauve_score(p, rng.normal(loc=4.0, size=(300, 8))) < 0.05


@pytest.mark.parametrize("q, message", [
    (np.zeros((10, 5)), r"one width; got shapes \(10, 8\) and \(10, 5\)"),
    (np.zeros((1, 8)), "at least 2 texts on each side; got 10 and 1"),
])
def test_features_of_different_widths_or_too_few_are_one_line(q, message):
    with pytest.raises(SettingsError, match=message):
        mauve_score.mauve_score(np.zeros((10, 8)), q)


def test_text_features_are_the_last_tokens_final_hidden_state(tiny_gpt2_checkpoint):
    from textdiffusion.models import load_causal_lm

    model, tokenizer = load_causal_lm(tiny_gpt2_checkpoint)
    texts = corpus.generate_corpus(5, seed=2)
    features = mauve_score.text_features(model, tokenizer, texts, batch_size=2)
    assert features.shape == (5, model.config.n_embd) and features.dtype == np.float32
    ids = [tokenizer.bos_token_id, *tokenizer(texts[3], add_special_tokens=False)["input_ids"]][:32]  # the positions
    import torch

    alone = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
    assert np.allclose(features[3], alone.detach().numpy(), atol=1e-5)  # padding in the batch changes nothing


def test_evaluate_reports_mauve_for_each_model_against_the_reference(tiny_checkpoint, tiny_gpt2_checkpoint):
    import evaluate

    table = evaluate.main(["--checkpoint", tiny_checkpoint, "--ar-checkpoint", tiny_gpt2_checkpoint, "--num-samples", "12",
                           "--max-eval-samples", "24", "--num-t-samples", "1"])
    scores = {row["model"]: row.get("mauve") for row in table}
    assert 0 < scores["diffusion"] <= 1 and 0 < scores["autoregressive"] <= 1 and scores["reference text"] is None
