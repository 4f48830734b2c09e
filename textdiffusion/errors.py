"""The library's one exception for bad values: what the scripts turn into a one-line usage error."""


class SettingsError(ValueError):
    """A value the library cannot work with; the message names the value and what would be accepted."""
