"""The one error type the user can act on: the CLI prints its message on one line, never a traceback."""


class DigitnetError(Exception):
    """Bad input or a bad environment, with a message that says what to do."""
