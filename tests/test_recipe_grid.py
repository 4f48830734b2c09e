import csv
import json

import pytest

import train
from experiments import learning_curve, quick_test_seeds, recipe_grid
from textdiffusion import cli


@pytest.mark.parametrize("recipe", list(recipe_grid.RECIPES))
def test_every_recipe_is_a_valid_train_command_that_changes_the_run(recipe, tmp_path):
    args = recipe_grid.GridArguments(data_dir="../shared/data")
    out = ["--output-dir", str(tmp_path / "run")]
    changed = []  # what the recipe changes in the built-in run or, for the quick-test's own settings, the real-text one
    for corpus in ("builtin", "shakespeare"):
        if changed:
            break
        parsed = train.parse_args(recipe_grid.command(args, corpus, recipe, 3, tmp_path / "data") + out)
        base = train.parse_args(recipe_grid.command(args, corpus, "preset", 3, tmp_path / "data") + out)
        assert parsed[-1].seed == 3 and parsed[0].from_scratch
        changed += [name for a, b in zip(parsed, base) for name in vars(a)
                    if name != "distributed_state" and getattr(a, name) != getattr(b, name)]
    assert (changed == []) == (recipe == "preset" or recipe_grid.RECIPES[recipe] == ["--architecture", base[0].architecture]), changed


def test_summary_gives_min_median_max_over_seeds():
    rows = [{"corpus": "builtin", "recipe": "a", "seed": s, "valid_rate": v, "eval_elbo": 1.0, "eval_loss": 1.0, "train_seconds": 5.0}
            for s, v in enumerate([0.9, 0.1, 0.5])]
    rows.append({"corpus": "builtin", "recipe": "a", "seed": 9, "failed": True})
    (entry,) = recipe_grid.summarise(rows)
    assert entry["seeds"] == 3
    assert (entry["valid_rate_min"], entry["valid_rate_median"], entry["valid_rate_max"]) == (0.1, 0.5, 0.9)


@pytest.mark.slow
def test_a_tiny_grid_trains_measures_and_reuses_its_runs(tmp_path):
    argv = ["--recipes", "preset", "bell", "--seeds", "0", "1", "--max-steps", "2", "--num-samples", "4",
            "--extra", "--max-train-samples 64 --max-eval-samples 16 --vocab-size 300", "--output-dir", str(tmp_path)]
    rows = recipe_grid.main(argv)
    assert [(r["recipe"], r["seed"]) for r in rows] == [("preset", 0), ("preset", 1), ("bell", 0), ("bell", 1)]
    assert all(0 <= r["valid_rate"] <= 1 and r["eval_elbo"] > 0 for r in rows)
    with open(tmp_path / "recipe_grid.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "recipe_grid.png").stat().st_size > 1000
    run_args = json.loads((tmp_path / "builtin" / "bell" / "seed1" / "run_args.json").read_text())
    assert run_args["DiffusionArguments"]["time_sampling"] == "bell" and run_args["TrainingArguments"]["seed"] == 1
    mtime = (tmp_path / "builtin" / "bell" / "seed1" / "final-model" / "model.safetensors").stat().st_mtime
    assert recipe_grid.main(argv) == rows  # finished runs are reused, not trained again
    assert (tmp_path / "builtin" / "bell" / "seed1" / "final-model" / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_valid_share_over_sampling_seeds_is_the_checked_share_of_each_draw(objective, tiny_checkpoint, tiny_gpt2_checkpoint, tmp_path, monkeypatch):
    from textdiffusion import models, sampling

    path = tiny_checkpoint if objective == "diffusion" else tiny_gpt2_checkpoint
    (tmp_path / "final-model").symlink_to(path)
    # A random model writes no valid story; a checker that accepts texts of even length gives shares to compare.
    monkeypatch.setattr(quick_test_seeds.corpus, "is_valid_story", lambda text: len(text) % 2 == 0)
    rates = quick_test_seeds.valid_over_sample_seeds(tmp_path, [1, 2, 1], 8)
    settings = sampling.GenerationSettings(num_samples=8, seed=2)
    if objective == "diffusion":
        texts = sampling.generate(models.load_checkpoint(path), settings, progress=False).texts
    else:
        texts = sampling.sample_autoregressive(*models.load_causal_lm(path), settings).texts
    assert rates[1] == sum(len(t) % 2 == 0 for t in texts) / 8
    assert rates[0] == rates[2]  # the same sampling seed draws the same documents


@pytest.mark.parametrize(
    "module, argv, message",
    [
        (recipe_grid, ["--recipes", "magic"], "--recipes magic: unknown"),
        (recipe_grid, ["--corpora", "klingon"], "--corpora klingon: unknown"),
        (recipe_grid, ["--seeds", "-1"], "each must be 0 or more"),
        (recipe_grid, ["--corpora", "shakespeare", "--data-dir", "/nonexistent"], "--data-dir /nonexistent"),
        (quick_test_seeds, ["--seeds", "-2"], "each 0 or more"),
        (quick_test_seeds, ["--num-samples", "0"], "at least 1"),
        (quick_test_seeds, ["--sample-seeds", "1", "-1"], "each sampling seed must be 0 or more"),
        (learning_curve, ["--every", "0"], "--every"),
        (learning_curve, ["--max-steps", "100", "--every", "200"], "--every at most --max-steps"),
    ],
)
def test_bad_grid_arguments_give_one_line_errors(module, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, [*argv, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_learning_curve_measures_every_saved_checkpoint(objective, tmp_path):
    argv = ["--objective", objective, "--max-steps", "4", "--every", "2", "--num-samples", "4", "--output-dir", str(tmp_path),
            "--extra", "--max-train-samples 64 --max-eval-samples 16 --vocab-size 300"]
    rows = learning_curve.main(argv)
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["valid_rate"] <= r["well_formed_rate"] <= 1 and r["nfe"] >= 1 for r in rows)
    run = tmp_path / f"{objective}-seed0"
    assert json.loads((run / "final-model" / "diffusion_config.json").read_text())["objective"] == objective
    assert (run / "learning_curve.png").stat().st_size > 1000 and (run / "learning_curve.csv").is_file()
    assert learning_curve.main(argv) == rows  # measured once, then read back
