"""models.py: building models from a config and loading checkpoints with how they were trained."""

import pytest
import torch

from textdiffusion import models


def test_a_trainer_checkpoint_without_tokenizer_loads_with_its_runs_tokenizer_and_settings(tiny_checkpoint, tmp_path):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "final-model")
    step = tmp_path / "checkpoint-5"
    step.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tmp_path / "final-model" / name, step / name)
    checkpoint = models.load_checkpoint(str(step))
    assert checkpoint.line_by_line and checkpoint.max_length == 32
    assert len(checkpoint.tokenizer) == checkpoint.model.get_input_embeddings().num_embeddings


@pytest.mark.parametrize("architecture", models.ARCHITECTURES)
def test_every_architecture_builds_a_masked_lm_the_size_of_gpt2_that_loads_back(architecture, story_tokenizer, tmp_path):
    model = models.build_model("diffusion", "tiny", story_tokenizer, 32, 0.0, architecture)
    gpt2 = models.build_model("ar", "tiny", story_tokenizer, 32)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert abs(count(model) - count(gpt2)) / count(gpt2) < 0.03  # a fair comparison: about the same parameters
    assert models.max_positions(model) == 32
    model.save_pretrained(tmp_path)
    story_tokenizer.save_pretrained(tmp_path)
    loaded, tokenizer = models.load_masked_lm(str(tmp_path))
    assert type(loaded) is type(model) and loaded.config.model_type == model.config.model_type
    ids = torch.tensor([[story_tokenizer.bos_token_id] + [story_tokenizer.mask_token_id] * 31])
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)


@pytest.mark.parametrize("architecture", models.ARCHITECTURES)
def test_untied_embeddings_are_their_own_weights_and_load_back(architecture, story_tokenizer, tmp_path):
    model = models.build_model("diffusion", "tiny", story_tokenizer, 32, 0.0, architecture, tie_word_embeddings=False)
    tied = models.build_model("diffusion", "tiny", story_tokenizer, 32, 0.0, architecture)
    head = model.get_output_embeddings().weight
    assert head.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert tied.get_output_embeddings().weight.data_ptr() == tied.get_input_embeddings().weight.data_ptr()
    count = lambda m: sum(p.numel() for p in m.parameters())
    # One more vocabulary-by-width matrix (and, in some architectures, its own bias of one value per token).
    assert count(model) - count(tied) in (head.numel(), head.numel() + head.shape[0])
    model.save_pretrained(tmp_path)
    story_tokenizer.save_pretrained(tmp_path)
    loaded, _ = models.load_masked_lm(str(tmp_path))
    assert not loaded.config.tie_word_embeddings
    assert torch.equal(loaded.get_output_embeddings().weight, head)
