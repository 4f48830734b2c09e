"""Saved model folders as the Hugging Face tools expect them: a model card (README.md) with hub metadata, a
--push-to-hub that uploads final-model with that card, a mask token the fill-mask pipeline fills without a stray
space, and a tokenizer_config.json transformers 4.x can read."""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from transformers import AutoTokenizer, pipeline

import train
from textdiffusion import cli, training
from textdiffusion.data import corpus, tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.models.diffusion_config import DiffusionConfig
from textdiffusion.training import hub, model_card

# ----------------------------------------------------------------------------- the card's contents

METRICS = {"eval_loss": 1.2345, "eval_elbo": 1.5021, "eval_ppl_bound": 4.491, "eval_loss_mask_0.1": 0.512,
           "eval_loss_mask_1.0": 2.75, "eval_runtime": 0.5, "epoch": 1.0, "best_step": 6}


def card_for(argv: list[str], tmp_path: Path, model=None, metrics=METRICS) -> tuple[dict, str, DiffusionConfig, Path]:
    """The card train.py would write for a run of `argv` ((front matter, body, config, folder)): the run's
    arguments as train.py records them in run_args.json, the diffusion config it saves, `metrics` held out."""
    model_args, data_args, diff_args, run_args, training_args = train.parse_args([*argv, "--output-dir", str(tmp_path / "run")])
    (tmp_path / "run").mkdir()
    train.write_run_args(tmp_path / "run", model_args, data_args, diff_args, run_args, training_args)
    config = training.run_diffusion_config(model_args, data_args, diff_args)
    folder = tmp_path / "run" / "final-model"
    folder.mkdir()
    path = model_card.write_model_card(folder, config, metrics, model_card.read_run_args(tmp_path / "run"), model)
    return (*front_matter(path), config, folder)


def front_matter(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    assert text.startswith("---\n"), text[:80]
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_a_from_scratch_card_names_architecture_size_data_layout_schedule_and_the_sampling_command(tmp_path, tiny_mlm):
    data = tmp_path / "data" / "my_stories.txt"
    meta, body, config, folder = card_for(
        ["--from-scratch", "--train-file", str(data), "--max-length", "64", "--schedule", "cosine"], tmp_path, tiny_mlm)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "fill-mask"
    assert {"text-diffusion", "masked-diffusion", tiny_mlm.config.model_type} <= set(meta["tags"])
    assert "base_model" not in meta and "datasets" not in meta and "license" not in meta  # none is known
    size = f"{tiny_mlm.config.num_hidden_layers} layers"
    assert f"- Base model: trained from scratch: {tiny_mlm.config.model_type}, tiny (" in body and size in body
    assert "- Data: the train file `my_stories.txt`\n" in body  # its name; diffusion_config.json's corpus has the path
    assert "- Layout: packed" in body and "- Max length: 64 tokens" in body
    assert "- Objective: diffusion" in body and "- Mask schedule: cosine" in body
    for field, value in config.to_dict().items():  # every field of diffusion_config.json
        assert f"| `{field}` | `{json.dumps(value)}` |" in body
    assert f"```bash\npython generate.py --checkpoint {folder}\n```" in body
    assert f'pipeline("fill-mask", model="{folder}")' in body


def test_the_card_reports_the_held_out_loss_and_bound_measured_at_the_end(tmp_path, tiny_mlm):
    _, body, _, _ = card_for(["--quick-test"], tmp_path, tiny_mlm)
    assert "| `eval_loss` | 1.2345 |" in body and "| `eval_elbo` | 1.5021 |" in body and "| `eval_ppl_bound` | 4.4910 |" in body
    assert "Loss by mask rate: 0.1: 0.512, 1.0: 2.750" in body
    assert "step 6, the lowest held-out loss" in body
    assert "- Data: the built-in story corpus (`builtin`)" in body and "- Layout: line by line" in body
    assert "eval_runtime" not in body  # timings say nothing about the model


def test_a_fine_tuned_card_names_its_hub_base_model_and_dataset_in_the_front_matter(tmp_path):
    meta, body, _, _ = card_for(["--model-name-or-path", "distilroberta-base", "--dataset-name", "wikitext"], tmp_path)
    assert meta["base_model"] == "distilroberta-base" and meta["datasets"] == ["wikitext"]
    assert "- Base model: fine-tuned from `distilroberta-base`" in body
    assert "- Data: the dataset `wikitext` (`wikitext-2-raw-v1`)" in body


def test_a_local_base_model_passes_on_its_license_but_is_no_hub_base_model(tmp_path):
    base = tmp_path / "my-bert"
    base.mkdir()
    (base / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\ntags:\n- bert\n---\n\n# my bert\n")
    meta, body, _, _ = card_for(["--model-name-or-path", str(base), "--dataset-name", "builtin"], tmp_path)
    assert meta["license"] == "apache-2.0"
    assert "base_model" not in meta  # a path on this machine is no hub id; the hub would refuse it
    assert f"- Base model: fine-tuned from `{base}`" in body


def test_the_gpt2_baseline_card_is_a_text_generation_model_with_its_exact_perplexity(tmp_path):
    meta, body, _, folder = card_for(["--quick-test", "--objective", "ar"], tmp_path, metrics={"eval_loss": 2.0})
    assert meta["pipeline_tag"] == "text-generation"
    assert "autoregressive-baseline" in meta["tags"] and "masked-diffusion" not in meta["tags"]
    assert "- Objective: ar" in body and "Mask schedule" not in body
    assert f"| perplexity | {math.exp(2.0):.3f} |" in body
    assert f"python compare_models.py --gpt2-checkpoint {folder}" in body


def test_a_model_card_folder_that_cannot_be_written_is_one_error_naming_it(tmp_path):
    not_a_folder = tmp_path / "final-model"
    not_a_folder.write_text("a file where the folder should be")
    with pytest.raises(SettingsError, match=f"cannot write the model card in {not_a_folder}: Not a directory"):
        model_card.write_model_card(not_a_folder, DiffusionConfig(max_length=32))
    assert not_a_folder.read_text() == "a file where the folder should be"


# ----------------------------------------------------------------------------- the tokenizer a client loads


def test_a_byte_level_bpe_mask_absorbs_the_space_before_it_and_a_char_one_does_not(story_tokenizer):
    mask = story_tokenizer.added_tokens_decoder[story_tokenizer.mask_token_id]
    assert mask.lstrip and not mask.rstrip
    pieces = story_tokenizer.convert_ids_to_tokens(story_tokenizer("the cat sat on the <mask> .", add_special_tokens=False)["input_ids"])
    assert pieces[-3:] == ["Ġthe", "<mask>", "Ġ."]  # no stray "Ġ" before the mask
    # Characters: the space before a gap is a character of its own, not part of the mask.
    chars = tokenization.train_tokenizer(corpus.generate_corpus(50), "char", 100)
    assert not chars.added_tokens_decoder[chars.mask_token_id].lstrip


def test_fill_mask_pipeline_fills_the_gap_without_a_double_space(tiny_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert tokenizer.added_tokens_decoder[tokenizer.mask_token_id].lstrip  # saved with it, read back with it
    fill = pipeline("fill-mask", model=tiny_checkpoint)
    [park] = fill("the cat sat on the <mask> .", targets=[" park"])
    assert park["sequence"] == "the cat sat on the park ."
    # What the model reads: the mask right after "Ġthe", no stray space piece between them.
    pieces = tokenizer.convert_ids_to_tokens(fill.preprocess("the cat sat on the <mask> .")["input_ids"][0].tolist())
    assert pieces[-4:] == ["Ġthe", "<mask>", "Ġ.", "</s>"]


def test_the_saved_tokenizer_class_is_one_transformers_4_reads_and_reloads_to_the_same_ids(story_tokenizer, tmp_path):
    story_tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    assert tokenization.make_tokenizer_config_portable(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [*corpus.generate_corpus(20, seed=3), "Tom's hat! 12 kites; the <mask> sat .", "caf\u00e9 \u2728"]
    assert reloaded(texts)["input_ids"] == story_tokenizer(texts)["input_ids"]
    assert reloaded.get_vocab() == story_tokenizer.get_vocab()
    assert reloaded.special_tokens_map == story_tokenizer.special_tokens_map
    assert reloaded.added_tokens_decoder[reloaded.mask_token_id].lstrip
    assert not tokenization.make_tokenizer_config_portable(tmp_path)  # already portable: left as it is


# ----------------------------------------------------------------------------- a real (tiny) run, pushed to a stand-in hub

TINY_RUN = [
    "--from-scratch", "--dataset-name", "builtin", "--max-train-samples", "200", "--max-eval-samples", "40",
    "--max-length", "48", "--line-by-line", "--vocab-size", "300", "--max-steps", "4", "--batch-size", "8",
    "--logging-steps", "2", "--eval-steps", "2", "--save-steps", "2", "--disable-tqdm", "true",
]
REPO = "me/tiny-diffusion"
TOKEN = "hf_not_a_real_token_0123"


def stand_in_hub(root: Path, calls: list):
    """A stand-in for huggingface_hub.HfApi: create_repo records the call, upload_folder copies the folder (less
    `ignore_patterns`) to ROOT/<repo id>, as the hub would hold it."""

    class StandInHfApi:
        def __init__(self, token=None, **kwargs):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
            calls.append({"call": "create_repo", "repo_id": repo_id, "token": self.token, "exist_ok": exist_ok})
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, ignore_patterns=None, **kwargs):
            calls.append({"call": "upload_folder", "repo_id": repo_id, "folder": folder_path, "token": self.token})
            shutil.copytree(folder_path, root / repo_id, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
            return SimpleNamespace(commit_url=f"https://hub.invalid/{repo_id}/commit/1")

    return StandInHfApi


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory):
    """A tiny run with --push-to-hub against the stand-in hub: (output dir, hub root, calls, metrics)."""
    tmp = tmp_path_factory.mktemp("pushed")
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub, "HfApi", stand_in_hub(tmp / "hub", calls))

        def no_trainer_push(*args, **kwargs):
            raise AssertionError("the Trainer pushed on its own")

        patch.setattr("transformers.trainer.hf_api", no_trainer_push)
        metrics = train.main([*TINY_RUN, "--output-dir", str(tmp / "run"), "--push-to-hub", "--hub-model-id", REPO,
                              "--hub-token", TOKEN])
    return tmp / "run", tmp / "hub", calls, metrics


@pytest.mark.slow
def test_final_model_and_each_checkpoint_carry_a_card_with_the_runs_facts(pushed_run):
    out, _, _, metrics = pushed_run
    meta, body = front_matter(out / "final-model" / "README.md")
    assert meta["library_name"] == "transformers" and "masked-diffusion" in meta["tags"]
    assert f"python generate.py --checkpoint {out / 'final-model'}" in body
    assert f"hf download {REPO} --local-dir {out / 'final-model'}" in body
    written = json.loads((out / "metrics.json").read_text())
    for key in ("eval_loss", "eval_elbo", "eval_ppl_bound"):  # the numbers of metrics.json, on the card
        assert f"| `{key}` | {written[key]:.4f} |" in body and key in metrics
    settings = json.loads((out / "final-model" / "diffusion_config.json").read_text())
    assert all(f"| `{field}` | `{json.dumps(value)}` |" in body for field, value in settings.items())
    assert "- Data: the built-in story corpus (`builtin`)" in body and "- Max length: 48 tokens" in body
    assert "names `PreTrainedTokenizerFast`" in body and "transformers 4.x and 5.x both load" in body
    assert 'fills "the <mask> ." without a double space' in body
    for step in (2, 4):
        checkpoint = out / f"checkpoint-{step}"
        _, card = front_matter(checkpoint / "README.md")
        logged = next(e for e in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
                      if e.get("step") == step and "eval_loss" in e)
        assert f"python generate.py --checkpoint {checkpoint}" in card
        assert f"at step {step}, on this model" in card and f"| `eval_loss` | {logged['eval_loss']:.4f} |" in card
        assert json.loads((checkpoint / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.slow
def test_push_to_hub_uploads_final_model_with_its_card_and_not_the_trainers_output_dir(pushed_run):
    out, hub_root, calls, _ = pushed_run
    assert [c["call"] for c in calls] == ["create_repo", "upload_folder"]  # the repository first, before training
    assert all(c["repo_id"] == REPO and c["token"] == TOKEN for c in calls)
    assert calls[1]["folder"] == str(out / "final-model")
    uploaded = hub_root / REPO
    names = {path.name for path in uploaded.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "diffusion_config.json",
            "README.md"} <= names
    assert "training_args.bin" not in names and not any(name.startswith("checkpoint-") for name in names)
    for name in names:  # exactly final-model's files
        assert (uploaded / name).read_bytes() == (out / "final-model" / name).read_bytes(), name
        assert TOKEN.encode() not in (uploaded / name).read_bytes(), name
    assert DiffusionConfig.load(uploaded) == DiffusionConfig.load(out / "final-model")
    assert "## Held-out evaluation" in (uploaded / "README.md").read_text()
    assert json.loads((uploaded / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.slow
def test_the_trained_checkpoint_fills_a_mask_in_the_pipeline_without_a_double_space(pushed_run):
    final = pushed_run[0] / "final-model"
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert tokenizer.added_tokens_decoder[tokenizer.mask_token_id].lstrip
    [filled] = pipeline("fill-mask", model=str(final))("the cat sat on the <mask> .", targets=[" the"])
    assert filled["sequence"] == "the cat sat on the the ." and "  " not in filled["sequence"]


def test_push_to_hub_without_a_reachable_hub_stops_before_training_with_one_line(tmp_path, monkeypatch, capsys):
    from huggingface_hub.errors import OfflineModeIsEnabled

    class OfflineHfApi:
        def __init__(self, token=None, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")

    monkeypatch.setattr(hub, "HfApi", OfflineHfApi)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, ["--quick-test", "--push-to-hub", "--hub-model-id", REPO, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1] == f"error: --push-to-hub: cannot create the hub repository {REPO}: Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.mark.slow
def test_a_final_model_folder_that_cannot_be_written_ends_the_run_with_one_line_and_leaves_nothing_half_written(
        tmp_path, monkeypatch, capsys):
    write_text = Path.write_text

    def refuse_the_card(self, *args, **kwargs):
        if self.name == ".README.md.tmp" and self.parent.name == ".final-model.tmp":
            raise PermissionError(13, "Permission denied", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse_the_card)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, [*TINY_RUN, "--max-steps", "2", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1] == f"error: cannot write the model card in {out / 'final-model'}: Permission denied"
    assert not (out / "final-model").exists() and not list(out.glob(".final-model*"))
