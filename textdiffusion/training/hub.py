"""--push-to-hub: final-model, with its model card, goes to the hub at the end of a run.

The Trainer's own push uploads the whole output directory (checkpoints, optimiser states, run files) after every
save and writes a card of its own; train.py instead creates the repository before training (so a missing token or
network shows at once, not after hours) and uploads exactly final-model when the run is done.
"""

import logging
from pathlib import Path

from huggingface_hub import HfApi

from textdiffusion.errors import SettingsError

logger = logging.getLogger(__name__)

TRAINING_ARGS = "training_args.bin"


def hub_model_id(training_args) -> str:
    """The repository --push-to-hub writes: --hub-model-id, else the output directory's name (as the Trainer names it)."""
    return training_args.hub_model_id or Path(training_args.output_dir).absolute().name


def create_hub_repo(training_args) -> str:
    """Create (or find) the repository of `hub_model_id(training_args)`; returns its full id (user/name)."""
    name = hub_model_id(training_args)
    try:
        api = HfApi(token=training_args.hub_token)
        return api.create_repo(name, private=training_args.hub_private_repo, exist_ok=True).repo_id
    except Exception as err:  # the hub client's errors (HTTP, offline, no token) differ between its versions
        raise SettingsError(f"--push-to-hub: cannot create the hub repository {name}: {_first_line(err)}") from None


def push_final_model(directory, repo_id: str, training_args) -> str:
    """Upload the folder `directory` (final-model: weights, tokenizer, diffusion_config.json, README.md; not
    training_args.bin) to the root of `repo_id`; returns the commit's URL."""
    try:
        api = HfApi(token=training_args.hub_token)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(directory), revision=training_args.hub_revision,
            # The Trainer's pickled settings: nothing a user loads, and they hold --hub-token when one was given.
            ignore_patterns=[TRAINING_ARGS],
            commit_message=f"{Path(directory).name} of train.py: model, tokenizer, diffusion_config.json and model card",
        )
    except Exception as err:  # as in create_hub_repo
        raise SettingsError(f"--push-to-hub: cannot upload {directory} to {repo_id}: {_first_line(err)}; "
                            "it stays on disk") from None
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("pushed %s to the hub: %s", directory, url)
    return url


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
