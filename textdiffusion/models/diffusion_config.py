"""diffusion_config.json: how a checkpoint was trained, written beside its weights and read by the one loader.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from textdiffusion.errors import SettingsError
from textdiffusion.masking.collator import MASK_RATES
from textdiffusion.masking.forward import PREFIX_POLICIES
from textdiffusion.masking.loss import LOSS_WEIGHTINGS
from textdiffusion.masking.schedules import SCHEDULES

DIFFUSION_CONFIG = "diffusion_config.json"
# Version 1 is the layout train.py wrote before the file carried a version: a file without one is version 1.
# Raise it when a field changes meaning or is removed, and teach `from_dict` to read the older layouts.
VERSION = 1
OBJECTIVES = ("diffusion", "ar")  # a masked-diffusion LM, or the matched GPT-2 baseline

_CHOICES = {
    "objective": OBJECTIVES, "mask_rates": MASK_RATES, "schedule": tuple(SCHEDULES), "loss_weighting": LOSS_WEIGHTINGS,
    "prefix_policy": PREFIX_POLICIES,
}


@dataclass(frozen=True)
class DiffusionConfig:
    """How a checkpoint was trained. The defaults describe a plain hub masked LM, which has no such file: packed
    running text (no end token), the linear schedule, its own positions as the length (`max_length` None)."""

    objective: str = "diffusion"
    mask_rates: str = "continuous"
    schedule: str = "linear"
    loss_weighting: str = "uniform"
    prefix_length: int = 0
    prefix_policy: str = "fixed"
    line_by_line: bool = False  # one document per row ending in the end token, else packed running text
    max_length: int | None = None  # the row length it was trained on
    corpus: str | None = None  # the training file or dataset name
    block_size: int | None = None  # block diffusion's block size; None for ordinary masked diffusion
    version: int = VERSION

    def __post_init__(self):
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise SettingsError(f"{name} {getattr(self, name)!r} is unknown; choose one of {', '.join(choices)}")
        if not isinstance(self.line_by_line, bool):
            raise SettingsError(f"line_by_line must be true or false, not {self.line_by_line!r}")
        if not _is_int(self.prefix_length) or self.prefix_length < 0:
            raise SettingsError(f"prefix_length {self.prefix_length!r} must be a whole number, 0 or more")
        for name in ("max_length", "block_size"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise SettingsError(f"{name} {value!r} must be a whole number, at least 1 (or null)")
        if self.corpus is not None and not isinstance(self.corpus, str):
            raise SettingsError(f"corpus {self.corpus!r} must be a name or a path (or null)")
        if not _is_int(self.version) or not 1 <= self.version <= VERSION:
            raise SettingsError(f"version {self.version!r} is not one this code writes (1 to {VERSION})")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str = DIFFUSION_CONFIG) -> "DiffusionConfig":
        """The config of a decoded file; SettingsError for a version newer than this code or a field it does not
        know, naming it (`source` says which file, for the message)."""
        if not isinstance(data, dict):
            raise SettingsError(f"{source} holds {type(data).__name__}, not an object of settings")
        version = data.get("version", 1)
        if not _is_int(version) or version < 1:
            raise SettingsError(f"{source} has version {version!r}; versions are whole numbers from 1")
        if version > VERSION:
            raise SettingsError(
                f"{source} has version {version}, newer than this code reads (up to {VERSION}); "
                "update textdiffusion to load this checkpoint"
            )
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SettingsError(f"{source} has unknown field(s) {', '.join(unknown)} for version {version}")
        try:
            return cls(**{**data, "version": VERSION})
        except SettingsError as err:
            raise SettingsError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, text: str, source: str = DIFFUSION_CONFIG) -> "DiffusionConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SettingsError(f"{source} is not valid JSON ({err})") from None
        return cls.from_dict(data, source)

    def save(self, directory: str | Path) -> Path:
        """Write `directory`/diffusion_config.json; returns its path."""
        path = Path(directory) / DIFFUSION_CONFIG
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "DiffusionConfig":
        """The config in `directory`/diffusion_config.json (FileNotFoundError when there is none)."""
        path = Path(directory) / DIFFUSION_CONFIG
        return cls.from_json(path.read_text(), str(path))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
