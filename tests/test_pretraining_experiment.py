"""experiments/pretraining.py's arithmetic and its refusals (the runs themselves are hours of CPU: RESULTS.md)."""

import pytest

from experiments import pretraining
from textdiffusion.cli import UsageError

CURVE = [[25, 3.0, 10.0], [50, 2.5, 20.0], [75, 2.1, 30.0], [100, 2.0, 40.0]]


def test_steps_to_reach_is_the_first_logged_step_at_or_below_the_target():
    assert pretraining.steps_to_reach(CURVE, 2.5) == 50
    assert pretraining.steps_to_reach(CURVE, 2.2) == 75
    assert pretraining.steps_to_reach(CURVE, 1.9) is None


def test_bound_at_seconds_is_the_last_evaluation_by_then():
    assert pretraining.bound_at_seconds(CURVE, 35.0) == 2.1
    assert pretraining.bound_at_seconds(CURVE, 5.0) is None


def test_the_summary_compares_pretrained_with_the_tiny_default_of_the_same_seed():
    base = {"corpus": "c", "seed": 1, "arm": "tiny-default", "bound_bpb": 2.1, "gen_ppl": 100.0, "train_seconds": 30.0,
            "steps": 100, "curve": CURVE}
    pre = {"corpus": "c", "seed": 1, "arm": "pretrained", "bound_bpb": 1.5, "gen_ppl": 60.0, "train_seconds": 400.0,
           "steps": 100, "curve": [[25, 2.0, 100.0], [50, 1.8, 200.0], [100, 1.5, 400.0]]}
    rows = pretraining.summarise([base, pre])
    row = next(r for r in rows if r["arm"] == "pretrained")
    assert row["steps_share_to_default_bound"] == "0.25/0.25/0.25"  # reached 2.1 at its first evaluation, step 25
    assert row["gen_ppl_over_default"] == "0.6/0.6/0.6"
    assert row["bound_at_default_seconds"] == "-"  # no evaluation of its own by the default's 30 s


@pytest.mark.parametrize("argv, said", [
    (["--arms", "pretrained", "nope"], "'nope' is not an arm"),
    (["--corpora", "shakespeare-char"], "'shakespeare-char' is not an arm or a BPE corpus"),
    (["--max-steps", "0"], "--max-steps 0 must be at least 1"),
    (["--checkpoint", "/nonexistent"], "--checkpoint /nonexistent: not a model directory"),
])
def test_bad_settings_are_refused_naming_the_value(argv, said, minilm_dir):
    args = pretraining.PretrainingArguments()
    parsed = pretraining.cli.parse(pretraining.cli.parser_for((pretraining.PretrainingArguments,), "x"), argv)[0]
    if parsed.checkpoint is None:
        parsed.checkpoint = minilm_dir
    with pytest.raises(UsageError, match=said.replace("(", r"\(")):
        pretraining.check(parsed)
    assert args.arms == list(pretraining.ARMS)


def test_each_arm_is_train_py_with_its_own_flags(tmp_path, minilm_dir):
    args = pretraining.PretrainingArguments(checkpoint=minilm_dir)
    assert pretraining.arm_flags(args, "pretrained", tmp_path, 0) == ["--model-name-or-path", minilm_dir]
    assert pretraining.arm_flags(args, "lora", tmp_path, 0) == ["--model-name-or-path", minilm_dir, "--lora-r", "16", "--learning-rate", "5e-4"]
    assert pretraining.arm_flags(args, "tiny-default", tmp_path, 0) == ["--from-scratch"]
    assert pretraining.ARMS == ("pretrained", "lora", "random-init", "tiny-default")
