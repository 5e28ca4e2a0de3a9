"""Errors meant for the person at the terminal: the message says what is wrong and what to do."""


class UserError(Exception):
    """Base class: entry points print the message on one line and exit non-zero."""


class DatasetNotFoundError(UserError):
    pass
