"""diffusion_config.json as a typed, versioned DiffusionConfig: round trip, the unversioned files of earlier runs,
and a clear refusal of a newer version, an unknown field or a bad value."""

import json
import shutil

import pytest

from textdiffusion import models
from textdiffusion.errors import SettingsError
from textdiffusion.models import DiffusionConfig
from textdiffusion.models.diffusion_config import VERSION

# What train.py wrote before the file carried a version (a block-diffusion run of the quick-test).
UNVERSIONED = {
    "block_size": 8, "corpus": "builtin", "line_by_line": True, "loss_weighting": "uniform", "mask_rates": "continuous",
    "max_length": 48, "objective": "diffusion", "prefix_length": 0, "prefix_policy": "fixed", "schedule": "linear",
}


def test_a_config_comes_back_the_same_through_json_and_through_a_directory(tmp_path):
    config = DiffusionConfig(objective="diffusion", mask_rates="discrete", schedule="cosine", loss_weighting="elbo",
                             prefix_length=4, prefix_policy="random", line_by_line=True, max_length=64,
                             corpus="my.txt", block_size=16)
    assert DiffusionConfig.from_json(config.to_json()) == config
    path = config.save(tmp_path)
    assert path.name == "diffusion_config.json" and DiffusionConfig.load(tmp_path) == config
    assert json.loads(path.read_text()) == {**UNVERSIONED, "mask_rates": "discrete", "schedule": "cosine",
                                            "loss_weighting": "elbo", "prefix_length": 4, "prefix_policy": "random",
                                            "max_length": 64, "corpus": "my.txt", "block_size": 16, "version": VERSION}


def test_an_unversioned_file_of_an_earlier_run_loads_as_version_1(tmp_path):
    (tmp_path / "diffusion_config.json").write_text(json.dumps(UNVERSIONED, indent=2, sort_keys=True))
    config = DiffusionConfig.load(tmp_path)
    assert config == DiffusionConfig(**UNVERSIONED) and config.version == 1 == VERSION
    assert config.block_size == 8 and config.line_by_line and config.max_length == 48


def test_a_partial_file_takes_the_defaults_of_a_plain_masked_lm():
    config = DiffusionConfig.from_json('{"line_by_line": true}')
    assert config.line_by_line and config.schedule == "linear" and config.max_length is None and config.block_size is None


def test_a_newer_version_is_refused_naming_it(tmp_path):
    (tmp_path / "diffusion_config.json").write_text(json.dumps({**UNVERSIONED, "version": VERSION + 1}))
    with pytest.raises(SettingsError, match=rf"version {VERSION + 1}, newer than this code reads \(up to {VERSION}\)"):
        DiffusionConfig.load(tmp_path)
    for bad in (0, "2", 1.5):
        with pytest.raises(SettingsError, match="version"):
            DiffusionConfig.from_dict({"version": bad})


def test_an_unknown_field_is_refused_naming_it():
    with pytest.raises(SettingsError, match="unknown field\\(s\\) temperature for version 1"):
        DiffusionConfig.from_dict({**UNVERSIONED, "temperature": 0.7})


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "banana", "schedule 'banana' is unknown"),
    ("objective", "gan", "objective 'gan' is unknown"),
    ("line_by_line", "yes", "line_by_line must be true or false"),
    ("max_length", 0, "max_length 0 must be a whole number"),
    ("block_size", 2.5, "block_size 2.5 must be a whole number"),
    ("prefix_length", -1, "prefix_length -1 must be"),
])
def test_a_bad_value_is_refused_naming_the_file_and_the_value(field, value, message):
    with pytest.raises(SettingsError, match=f"some/diffusion_config.json: {message}"):
        DiffusionConfig.from_dict({**UNVERSIONED, field: value}, "some/diffusion_config.json")


def test_a_file_that_is_not_a_json_object_is_refused():
    with pytest.raises(SettingsError, match="not valid JSON"):
        DiffusionConfig.from_json("{line_by_line: true")
    with pytest.raises(SettingsError, match="holds list"):
        DiffusionConfig.from_json("[1, 2]")


def test_load_checkpoint_returns_the_typed_config(tiny_checkpoint, tmp_path):
    checkpoint = models.load_checkpoint(tiny_checkpoint)
    assert checkpoint.diffusion_config == DiffusionConfig(line_by_line=True, max_length=32)
    assert checkpoint.line_by_line and checkpoint.max_length == 32 and checkpoint.block_size is None
    # No file (a plain masked LM): the defaults, packed text and the model's own positions up to 128.
    plain = tmp_path / "plain"
    shutil.copytree(tiny_checkpoint, plain)
    (plain / "diffusion_config.json").unlink()
    checkpoint = models.load_checkpoint(str(plain))
    assert checkpoint.diffusion_config == DiffusionConfig() and not checkpoint.line_by_line and checkpoint.max_length == 32


def test_load_checkpoint_refuses_a_checkpoint_from_a_newer_version(tiny_checkpoint, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(tiny_checkpoint, newer)
    (newer / "diffusion_config.json").write_text(json.dumps({"version": VERSION + 1, "line_by_line": True}))
    with pytest.raises(SettingsError, match=f"newer.diffusion_config.json has version {VERSION + 1}"):
        models.load_checkpoint(str(newer))
