"""generate.py end to end on a saved tiny checkpoint: the README commands, the output file, bad input."""

import json
import runpy
import shutil
import sys

import pytest
import torch

import generate
from textdiffusion import cli, models, sampling
from textdiffusion.data import tokenization
from textdiffusion.errors import SettingsError
from textdiffusion.sampling import generation

FAST = ["--steps", "2", "--max-length", "12", "--num-samples", "2"]


def generate_main(checkpoint, *argv):
    return generate.main(["--checkpoint", checkpoint, *FAST, *argv])


@pytest.mark.parametrize(
    "argv",
    [
        ["--schedule", "linear"],
        ["--schedule", "cosine"],
        ["--schedule", "exponential"],
        ["--sampling", "greedy"],
        ["--sampling", "topk", "--k", "50"],
        ["--sampling", "nucleus", "--p", "0.9"],
        ["--temperature", "0.7"],
        ["--strategy", "remask", "--block_size", "4", "--prompt", "tom found"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_readme_commands_generate_one_text_per_sample(tiny_checkpoint, argv, capsys):
    texts = generate_main(tiny_checkpoint, "--hide-steps", *argv)
    assert len(texts) == 2
    assert capsys.readouterr().out == "".join(text + "\n" for text in texts)


def test_roberta_checkpoint_alias_names_the_checkpoint(tiny_checkpoint):
    assert generate.parse_args(["--roberta-checkpoint", tiny_checkpoint]).checkpoint == tiny_checkpoint


def test_steps_are_shown_from_all_masked_to_the_final_text(tiny_checkpoint, capsys):
    texts = generate_main(tiny_checkpoint, "--prefix", "tom found", "--strategy", "random")
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert lines[0].startswith("[0/2] tom found _ ")
    assert lines[1].startswith("[1/2] tom found")
    assert f"\n[2/2] {texts[0]}\n" in out  # the last step is the first sample's text
    assert out.endswith("\n\n" + "".join(text + "\n" for text in texts))


def test_render_state_shows_each_mask_as_an_underscore(story_tokenizer):
    ids = sampling.build_inputs(story_tokenizer, "the day", max_length=6)[0]
    assert sampling.render_state(story_tokenizer, ids) == "the day _ _ _"


def test_same_seed_gives_the_same_text(tiny_checkpoint):
    assert generate_main(tiny_checkpoint, "--seed", "3", "--hide-steps") == generate_main(tiny_checkpoint, "--seed", "3", "--hide-steps")
    assert generate_main(tiny_checkpoint, "--seed", "3", "--hide-steps") != generate_main(tiny_checkpoint, "--seed", "4", "--hide-steps")


def test_infill_keeps_the_template_and_ends_where_it_ends(tiny_checkpoint, story_tokenizer):
    template = "tom found a [MASK]*2 in the park ."
    args = generate.parse_args(["--checkpoint", tiny_checkpoint, "--infill", template, *FAST, "--max-length", "32"])
    checkpoint = models.load_checkpoint(args.checkpoint)
    out = sampling.generate(checkpoint, args, progress=False)
    result, texts, tokenizer = out.result, out.texts, checkpoint.tokenizer
    end = tokenization.end_token_id(tokenizer)
    assert (result.ids[:, -1] == end).all()  # the fixed end token after the template
    assert (result.ids[:, 1:-1] != end).all()  # and none inside it: the template fixes where the text ends
    for text in texts:
        assert text.startswith("tom found a") and text.endswith("in the park .")


def test_output_jsonl_has_one_object_per_sample_with_the_documented_fields(tiny_checkpoint, tmp_path):
    out = tmp_path / "samples" / "x.jsonl"
    texts = generate_main(tiny_checkpoint, "--prefix", "anna", "--hide-steps", "--output", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == texts
    for r in records:
        assert {"text", "prefix", "steps", "nfe", "seconds", "settings"} <= set(r)
        assert r["prefix"] == "anna" and r["steps"] == 2 and r["nfe"] == 2 and r["seconds"] > 0
        assert r["settings"]["schedule"] == "cosine" and r["settings"]["line_by_line"] is True
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory, story_tokenizer):
    directory = tmp_path_factory.mktemp("gpt2")
    models.build_model("ar", "tiny", story_tokenizer, 32).save_pretrained(directory)
    story_tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def maskless_checkpoint(tmp_path_factory, story_tokenizer):
    directory = tmp_path_factory.mktemp("no-mask")
    models.build_model("diffusion", "tiny", story_tokenizer, 32).save_pretrained(directory)
    tokenizer = tokenization.PreTrainedTokenizerFast(tokenizer_object=story_tokenizer.backend_tokenizer, cls_token="<s>", sep_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(directory)
    return str(directory)


BAD_SAMPLING = [
    (["--prefix", "tom found a red ball in the park", "--max-length", "6"], r"prefix is \d+ tokens.*max_length 6"),
    (["--steps", "0"], r"steps 0 must be at least 1"),
    (["--p", "0"], r"p 0.0 must be in \(0, 1\]"),
    (["--p", "1.5"], r"p 1.5 must be in \(0, 1\]"),
    (["--k", "0"], r"k 0 must be at least 1"),
    (["--temperature", "0", "--sampling", "topk"], r"temperature 0.0 must be > 0 with sampling topk"),
    (["--temperature", "-1", "--sampling", "nucleus"], r"temperature -1.0 must be > 0 with sampling nucleus"),
    (["--threshold", "0"], r"threshold 0.0 must be in \(0, 1\]"),
    (["--threshold", "1.01"], r"threshold 1.01 must be in \(0, 1\]"),
    (["--infill", "tom found a red ball"], r"infill template 'tom found a red ball' has no \[MASK\]"),
    (["--num-samples", "0"], r"num_samples 0 must be at least 1"),
    (["--strategy", "remdm", "--remask-eta", "1.5"], r"remask_eta 1.5 must be in \[0, 1\]"),
    (["--strategy", "entropy-bounded", "--entropy-budget", "0"], r"entropy_budget 0.0 must be > 0"),
    (["--strategy", "random", "--confidence", "margin"], r"confidence margin has no meaning with strategy random; it applies to"),
    (["--remask-eta", "0.2"], r"remask_eta 0.2 has no meaning with strategy auto; it applies to strategy remdm"),
    (["--strategy", "remdm", "--entropy-budget", "2"], r"entropy_budget 2.0 has no meaning with strategy remdm"),
    (["--strategy", "remdm", "--remask-schedule", "loop", "--loop-on", "0.1", "--loop-off", "0.2"], r"must satisfy 0 < off < on < 1"),
    (["--strategy", "remdm", "--loop-on", "0.7"], r"loop_on, loop_off and loop_alpha apply to remask_schedule loop only"),
    (["--cfg-scale", "-1", "--prefix", "tom"], r"cfg_scale -1.0 must be 0 \(off\) or more"),
    (["--cfg-scale", "2"], r"cfg_scale 2.0 guides by a prompt; give prefix TEXT or infill TEMPLATE"),
]


@pytest.mark.parametrize("argv, message", BAD_SAMPLING, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_bad_sampling_options_are_usage_errors(tiny_checkpoint, argv, message):
    with pytest.raises(SettingsError, match=message):
        generate.main(["--checkpoint", tiny_checkpoint, "--steps", "2", "--max-length", "32", *argv])


def test_a_longer_max_length_on_a_line_by_line_model_generates_in_its_positions(tiny_checkpoint, caplog):
    # every training document ended within the model's 32 positions, so --max-length 50 is met within them
    texts = generate.main(["--checkpoint", tiny_checkpoint, "--steps", "2", "--max-length", "50", "--num-samples", "2"])
    assert len(texts) == 2
    assert "--max-length 50: the model has 32 positions and was trained line by line" in caplog.text
    settings = sampling.GenerationSettings(max_length=50)
    assert sampling.fit_to_positions(settings, 32, line_by_line=True).max_length == 32
    assert settings.max_length == 50  # a copy is fitted, not the caller's settings


def test_a_longer_max_length_on_a_packed_text_model_is_refused(tiny_checkpoint, tmp_path):
    packed = tmp_path / "packed"
    shutil.copytree(tiny_checkpoint, packed)
    models.DiffusionConfig(line_by_line=False, max_length=32).save(packed)
    with pytest.raises(SettingsError, match=r"max_length 33 is more than the model's 32 positions; use max_length 32 or less"):
        generate.main(["--checkpoint", str(packed), "--steps", "2", "--max-length", "33"])


def test_greedy_accepts_temperature_zero(tiny_checkpoint):
    assert len(generate_main(tiny_checkpoint, "--sampling", "greedy", "--temperature", "0", "--hide-steps")) == 2


def test_missing_checkpoint_directory_is_a_usage_error(tmp_path):
    with pytest.raises(SettingsError, match=r"checkpoint .*nope: no such directory"):
        generate.main(["--checkpoint", str(tmp_path / "nope")])


def test_gpt2_checkpoint_is_refused_as_not_a_masked_lm(gpt2_checkpoint):
    with pytest.raises(SettingsError, match=r"is a gpt2 model, not a masked LM"):
        generate.main(["--checkpoint", gpt2_checkpoint])


def test_tokenizer_without_mask_token_is_refused(maskless_checkpoint):
    with pytest.raises(SettingsError, match=r"has no mask token"):
        generate.main(["--checkpoint", maskless_checkpoint])


def test_output_that_is_a_directory_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match=r"output .* is a directory"):
        generate_main(tiny_checkpoint, "--output", str(tmp_path))


@pytest.mark.parametrize("flag", ["--schedule", "--strategy", "--sampling", "--confidence", "--remask-schedule"])
def test_unknown_choice_is_one_line_naming_it_and_exits_with_code_2(tiny_checkpoint, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(generate.main, ["--checkpoint", tiny_checkpoint, *FAST, f"{flag}=bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag}: invalid choice: 'bogus' (choose from ")


def test_check_sampling_args_rejects_names_outside_the_tables():
    args = generate.parse_args([])
    args.schedule = "quadratic"
    with pytest.raises(SettingsError, match="schedule 'quadratic' is unknown; choose one of linear, cosine"):
        args.check()


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        generate.main(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "--hide-steps" in help_text.replace("_", "-") and "--roberta-checkpoint" in help_text


def test_usage_error_is_one_line_on_stderr_with_exit_code_2(tmp_path, monkeypatch, capsys):
    # The script's own __main__ block, run in this process (a new interpreter would re-import torch: slow).
    monkeypatch.setattr(sys, "argv", ["generate.py", "--checkpoint", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(generate.__file__, run_name="__main__")
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: checkpoint ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""


# ----------------------------------------------------------------------------- guided by a causal LM


def guided_settings(**kwargs):
    return sampling.GenerationSettings(**{"prefix": "tom found", "max_length": 20, "num_samples": 3, "steps": 4,
                                          "strategy": "confidence", "seed": 2, **kwargs})


def test_a_guide_joins_every_step_and_weight_zero_is_unguided(tiny_checkpoint, tiny_gpt2_checkpoint):
    checkpoint = models.load_checkpoint(tiny_checkpoint)
    plain = sampling.generate(checkpoint, guided_settings(), progress=False)
    zero = sampling.generate(checkpoint, guided_settings(guide=tiny_gpt2_checkpoint, guide_weight=0.0), progress=False)
    guided = sampling.generate(checkpoint, guided_settings(guide=tiny_gpt2_checkpoint, guide_weight=0.9), progress=False)
    assert torch.equal(zero.ids, plain.ids) and zero.result.guide_nfe == 0
    assert guided.result.guide_nfe == guided.nfe == plain.nfe
    assert not torch.equal(guided.ids, plain.ids)
    assert torch.equal(guided.ids[guided.result.fixed], plain.ids[plain.result.fixed])
    assert not (guided.ids == checkpoint.tokenizer.mask_token_id).any()


def test_rerank_keeps_the_candidate_the_guide_finds_most_likely(tiny_checkpoint, tiny_gpt2_checkpoint):
    checkpoint = models.load_checkpoint(tiny_checkpoint)
    chosen = sampling.generate(checkpoint, guided_settings(guide=tiny_gpt2_checkpoint, rerank=3), progress=False)
    every = sampling.generate(checkpoint, guided_settings(guide=tiny_gpt2_checkpoint, num_samples=9), progress=False)
    guide, _ = sampling.load_guide(tiny_gpt2_checkpoint, checkpoint, 20)
    end = tokenization.end_token_id(checkpoint.tokenizer)
    ends_before = (every.ids == end).cumsum(-1) - (every.ids == end).long()
    nll = sampling.guide_nll(guide, every.ids, ~every.result.fixed & ends_before.eq(0)).view(3, 3)
    best = nll.argmin(-1) + torch.arange(3) * 3
    assert torch.equal(chosen.ids, every.ids[best])
    assert len(chosen.texts) == 3 and len(chosen.trajectory[0].ids) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--guide-weight", "1.5", "--guide", "x"], r"guide_weight 1.5 must be in \[0, 1\]"),
        (["--rerank", "0"], r"rerank 0 must be at least 1"),
        (["--rerank", "4"], r"rerank needs a guide: add guide CHECKPOINT"),
        (["--guide", "nowhere/gpt2"], r"checkpoint directory not found: nowhere/gpt2"),
    ],
)
def test_bad_guide_options_are_usage_errors(tiny_checkpoint, extra, message):
    with pytest.raises(SettingsError, match=message):
        generate.main(["--checkpoint", tiny_checkpoint, "--steps", "2", "--max-length", "20", *extra])


def test_a_masked_lm_or_another_tokenizer_is_refused_as_guide(tiny_checkpoint, tmp_path):
    with pytest.raises(SettingsError, match="not an autoregressive"):
        generate.main(["--checkpoint", tiny_checkpoint, "--max-length", "20", "--guide", tiny_checkpoint])
    other = tokenization.train_tokenizer([" ".join(f"w{i}" for i in range(80))], "word", 100)
    models.build_model("ar", "tiny", other, 32).save_pretrained(tmp_path / "gpt2")
    other.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(SettingsError, match="has another tokenizer"):
        generate.main(["--checkpoint", tiny_checkpoint, "--max-length", "20", "--guide", str(tmp_path / "gpt2")])


@pytest.mark.parametrize("infill", [None, "tom found a [MASK]*2 in the park ."])
def test_a_line_by_line_model_is_sampled_with_the_end_after_text_rule(tiny_checkpoint, story_tokenizer, monkeypatch, infill):
    seen = []
    real = sampling.sample
    monkeypatch.setattr(generation, "sample", lambda *a, **kw: seen.append((a[3].end_after_text, kw.get("end_token_id"))) or real(*a, **kw))
    argv = ["--checkpoint", tiny_checkpoint, *FAST, "--max-length", "32"] + (["--infill", infill] if infill else [])
    sampling.generate(models.load_checkpoint(tiny_checkpoint), generate.parse_args(argv), progress=False)
    sampling.generate(models.load_checkpoint(tiny_checkpoint), generate.parse_args(argv + ["--end-after-text", "false"]), progress=False)
    # an infill template fixes where the text ends: no end token may be drawn, so there is nothing to order
    end = None if infill else tokenization.end_token_id(story_tokenizer)
    assert seen == [(True, end), (False, end)]


def test_both_samplers_report_seconds_after_one_untimed_warm_up_pass(tiny_checkpoint, tiny_gpt2_checkpoint):
    """The seconds a script reports are measured alike for diffusion and GPT-2: each starts its clock after a
    warm-up forward pass of 4 tokens, so neither is billed the first pass's lazy set-up."""
    import time

    def calls(model):
        seen = []
        hook = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append((time.perf_counter(), tuple(kwargs.get("input_ids", args[0] if args else None).shape))),
                                               with_kwargs=True)
        return seen, hook

    checkpoint = models.load_checkpoint(str(tiny_checkpoint))
    seen, hook = calls(checkpoint.model.base_model)  # the encoder: the sampler runs the LM head only where it draws
    out = sampling.generate(checkpoint, sampling.GenerationSettings(max_length=16, num_samples=2, steps=4), progress=False)
    hook.remove()
    before = [shape for stamp, shape in seen if stamp < out.started]
    assert before == [(1, 4)] and len(seen) - 1 == out.nfe

    model, tokenizer = models.load_causal_lm(str(tiny_gpt2_checkpoint))
    seen, hook = calls(model)
    ar = sampling.sample_autoregressive(model, tokenizer, sampling.GenerationSettings(max_length=16, num_samples=2))
    hook.remove()
    assert seen[0][1] == (1, 4) and all(shape[0] == 2 for _, shape in seen[1:]) and len(seen) > 1
    assert ar.times[0] == 0.0
