"""LoRA fine-tuning (--lora-r): adapters on the encoder's linear layers, the LM head trained in full, and the run's
final-model holding the merged model (a plain checkpoint) with the adapter in final-model/adapter; on the real
pretrained BERT the dev extra installs (MiniLM-L6-H384-uncased) and on tiny models built from a config."""

import json
import logging
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

import generate
import train
from textdiffusion import cli, models
from textdiffusion.errors import SettingsError
from textdiffusion.models import lora

MAX_LENGTH = 32
SENTENCE = "the little cat found a red ball in the garden and ran home ."


def fine_tune(base, text_dir, output_dir, steps: int, *extra):
    return train.main([
        "--model-name-or-path", str(base), "--train-file", str(text_dir / "train.txt"),
        "--validation-file", str(text_dir / "valid.txt"), "--max-length", str(MAX_LENGTH), "--batch-size", "2",
        "--max-steps", str(steps), "--eval-steps", "2", "--logging-steps", "2", "--max-eval-samples", "8",
        "--report-to", "none", "--disable-tqdm", "true", "--output-dir", str(output_dir), "--lora-r", "16", *extra,
    ])


def lora_parameters(model) -> dict:
    return {name: p for name, p in model.named_parameters() if "lora_" in name}


# ----------------------------------------------------------------------------- which weights train


def test_lora_trains_under_15_percent_of_minilm_its_head_in_full_and_freezes_the_encoder(minilm_dir, caplog):
    model, _ = models.load_masked_lm(minilm_dir)
    with caplog.at_level(logging.INFO, logger="textdiffusion.models.lora"):
        lora.add_adapters(model, r=16)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    share = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(p.numel() for p in model.parameters())
    assert share < 0.15
    # The head, trained in full; its decoder is the input embedding matrix (tied), the vocabulary the encoder reads.
    head = {name for name, _ in model.named_parameters() if name.startswith("cls.")}
    assert head == {"cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                    "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"}
    assert head <= trainable
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert not model.get_input_embeddings().weight.requires_grad
    # The encoder: only its adapters train, two (A and B) on each of its 6 x 6 linear layers.
    encoder = {name for name, _ in model.named_parameters() if name.startswith("bert.")}
    assert encoder & trainable == set(lora_parameters(model)) and len(lora_parameters(model)) == 2 * 36
    said = [r.getMessage() for r in caplog.records if r.name == "textdiffusion.models.lora"]
    assert len(said) == 1 and said[0].startswith("LoRA r=16 alpha=32 on 36 linear layers of the encoder, the head (cls)")
    assert f"({100 * share:.2f}%)" in said[0]


@pytest.mark.parametrize("architecture, head", [
    ("roberta", ["lm_head"]), ("modernbert", ["head", "decoder"]), ("deberta", ["cls"]),
])
def test_the_head_is_every_module_outside_the_encoder(story_tokenizer, architecture, head):
    model = models.build_model("diffusion", "tiny", story_tokenizer, MAX_LENGTH, architecture=architecture)
    assert lora.head_names(model) == head
    lora.add_adapters(model, r=4)
    in_head = [p for name in head for p in getattr(model, name).parameters()]
    assert all(p.requires_grad for p in in_head if p is not model.get_input_embeddings().weight)
    assert not any("lora_" in name for name, _ in model.named_parameters() if name.split(".")[0] in head)


def test_target_modules_choose_layers_by_name_or_dotted_suffix(minilm_dir):
    model, _ = models.load_masked_lm(minilm_dir)
    assert lora.target_names(model, ["query", "value"]) == [
        f"bert.encoder.layer.{i}.attention.self.{kind}" for i in range(6) for kind in ("query", "value")]
    assert lora.target_names(model, ["layer.0.attention.self.key"]) == ["bert.encoder.layer.0.attention.self.key"]
    lora.add_adapters(model, r=4, target_modules=["query"])
    adapted = {name.split(".lora_")[0] for name in lora_parameters(model)}
    assert adapted == {f"bert.encoder.layer.{i}.attention.self.query" for i in range(6)}


def test_a_target_module_outside_the_encoder_is_refused_naming_the_layers_there_are(minilm_dir):
    model, _ = models.load_masked_lm(minilm_dir)
    with pytest.raises(SettingsError, match=r"lora target module 'decoder' is not a linear layer of the encoder of "
                                            r"BertForMaskedLM; its linear layers are named dense, key, query, value"):
        lora.add_adapters(model, r=4, target_modules=["decoder"])


# ----------------------------------------------------------------------------- what a run leaves


@pytest.fixture(scope="module")
def lora_run(minilm_dir, minilm_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run")
    # A learning rate large enough that 4 steps move the adapters visibly.
    fine_tune(minilm_dir, minilm_text, out, 4, "--learning-rate", "1e-3")
    return out


def encode(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer(SENTENCE)["input_ids"]])


@pytest.mark.slow
def test_the_merged_final_model_gives_the_logits_of_the_base_with_its_saved_adapter(minilm_dir, lora_run):
    final = lora_run / "final-model"
    merged, tokenizer = models.load_masked_lm(str(final))
    # A plain checkpoint: no peft file where transformers would look for one, the embeddings still tied.
    assert not (final / "adapter_config.json").exists() and (final / "model.safetensors").is_file()
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    adapter = final / lora.ADAPTER
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert settings["r"] == 16 and settings["lora_alpha"] == 32 and settings["modules_to_save"] == ["cls"]
    assert settings["base_model_name_or_path"] == minilm_dir
    # The base checkpoint (its MLM head initialised at random, as at every load) with the adapter and head saved.
    with_adapter = PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained(minilm_dir), str(adapter))
    ids = encode(tokenizer)
    with torch.no_grad():
        expected = with_adapter.eval()(input_ids=ids).logits
        logits = merged.eval()(input_ids=ids).logits
    assert torch.allclose(logits, expected, atol=1e-4)


@pytest.mark.slow
def test_lora_changed_the_encoder_and_left_the_embeddings_as_they_were(minilm_dir, lora_run):
    merged, tokenizer = models.load_masked_lm(str(lora_run / "final-model"))
    base, _ = models.load_masked_lm(minilm_dir)
    ids = encode(tokenizer)
    with torch.no_grad():
        hidden = merged.eval().bert(input_ids=ids).last_hidden_state
        base_hidden = base.eval().bert(input_ids=ids).last_hidden_state
        assert (hidden - base_hidden).abs().max() > 1e-3  # the adapters, merged, moved the encoder's output
        assert not torch.allclose(merged(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-3)
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(merged.state_dict()[query], base.state_dict()[query])
    assert torch.equal(merged.get_input_embeddings().weight, base.get_input_embeddings().weight)  # frozen


@pytest.mark.slow
def test_generate_samples_from_the_merged_model_as_from_any_final_model(lora_run):
    texts = generate.main(["--checkpoint", str(lora_run / "final-model"), "--max-length", "16", "--num-samples", "2",
                           "--hide-steps", "--seed", "3"])
    assert len(texts) == 2 and all(text.strip() and "[MASK]" not in text for text in texts)


@pytest.mark.slow
def test_a_lora_run_resumes_from_the_adapter_and_head_in_its_checkpoint(minilm_dir, minilm_text, tmp_path):
    fine_tune(minilm_dir, minilm_text, tmp_path, 2, "--save-steps", "2")
    # Mark the checkpoint's weights: a resumed run that re-initialised its adapters or head would lose the marks.
    weights = tmp_path / "checkpoint-2" / "model.safetensors"
    state = load_file(str(weights))
    adapter_a = "bert.encoder.layer.0.attention.self.query.lora_A.default.weight"
    head_bias = "cls.predictions.transform.LayerNorm.bias"
    state[adapter_a] = 2 * state[adapter_a]
    state[head_bias] = torch.full_like(state[head_bias], 0.25)
    save_file(state, str(weights), metadata={"format": "pt"})
    fine_tune(minilm_dir, minilm_text, tmp_path, 4, "--save-steps", "2", "--resume-from-checkpoint")
    assert json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    resumed = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    # Two more steps of Adam at 5e-5 move each weight by about 1e-4.
    assert torch.allclose(resumed[adapter_a], state[adapter_a], atol=1e-3)
    assert not torch.allclose(resumed[adapter_a], state[adapter_a] / 2, atol=1e-3)
    assert torch.allclose(resumed[head_bias], state[head_bias], atol=1e-3)
    assert (tmp_path / "final-model" / lora.ADAPTER / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_lora_on_a_pretrained_gpt2_merges_its_conv1d_layers(tiny_gpt2_checkpoint, minilm_text, tmp_path, story_tokenizer):
    fine_tune(tiny_gpt2_checkpoint, minilm_text, tmp_path, 2, "--objective", "ar", "--learning-rate", "1e-3")
    final = tmp_path / "final-model"
    merged = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gpt2_checkpoint),
                                             str(final / lora.ADAPTER)).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_gpt2_checkpoint).eval()
    ids = encode(story_tokenizer)
    with torch.no_grad():
        logits = merged(input_ids=ids).logits
        assert torch.allclose(logits, with_adapter(input_ids=ids).logits, atol=1e-4)
        assert not torch.allclose(logits, base(input_ids=ids).logits, atol=1e-3)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, message", [
    (["--lora-r", "-1"], "--lora-r -1 must be 0 (LoRA off) or a rank of at least 1"),
    (["--lora-r", "0", "--lora-alpha", "16"], "--lora-alpha 16.0 has no effect with --lora-r 0 (LoRA off); add --lora-r R"),
    (["--lora-target-modules", "query", "value"], "--lora-target-modules query value has no effect with --lora-r 0"),
    (["--lora-dropout", "0.1"], "--lora-dropout 0.1 has no effect with --lora-r 0"),
    (["--lora-r", "8", "--from-scratch", "--dataset-name", "builtin"],
     "--lora-r 8 adapts a pretrained checkpoint, but --from-scratch builds a new model, which is trained in full; "
     "drop --lora-r or --from-scratch"),
    (["--lora-r", "8", "--quick-test"], "--lora-r 8 adapts a pretrained checkpoint, but --quick-test builds a new model"),
    (["--lora-r", "8", "--lora-alpha", "0"], "--lora-alpha 0.0 must be > 0"),
    (["--lora-r", "8", "--lora-dropout", "1"], "--lora-dropout 1.0 must be in [0, 1)"),
    (["--lora-r", "8", "--lora-target-modules", ","], "--lora-target-modules names no module"),
    (["--lora-r", "8", "--lora-target-modules", "query,qery"], "lora target module 'qery' is not a linear layer of the "
     "encoder of BertForMaskedLM; its linear layers are named dense, key, query, value"),
])
def test_bad_lora_input_is_one_line_and_writes_nothing(argv, message, minilm_dir, minilm_text, tmp_path, capsys):
    out = tmp_path / "out"
    data = ["--train-file", str(minilm_text / "train.txt"), "--max-length", str(MAX_LENGTH)]
    model = [] if "--from-scratch" in argv or "--quick-test" in argv else ["--model-name-or-path", minilm_dir]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, [*model, *data, *argv, "--output-dir", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and not out.exists()


def test_lora_target_modules_split_at_commas_as_they_are_parsed():
    model_args, _, _, run_args, _ = train.parse_args(["--lora-r", "4", "--lora-target-modules", "query,value", "key"])
    train.check_lora_args(model_args, run_args)
    assert model_args.lora_target_modules == ["query", "value", "key"] and model_args.lora_alpha is None
