"""Errors of the data layer: one exception per kind of unusable record."""


class RecordError(ValueError):
    """A record, or an image it names, cannot be used. The message is one line."""


class RecordTooLong(RecordError):
    """A record encodes to more tokens than ``max_length``."""
