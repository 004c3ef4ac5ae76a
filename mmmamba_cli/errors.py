"""Errors that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a wrong path, a corrupt file, an invalid option value."""
