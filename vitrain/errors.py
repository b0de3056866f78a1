"""The one exception type for user mistakes (bad config, bad paths, bad files)."""


class UserError(Exception):
    """A mistake the user can fix: the message names the offending value and the fix.

    The entry point prints the message alone (no traceback) and exits non-zero.
    """


def require_positive(prefix: str, **values: int) -> None:
    """Raise a :class:`UserError` naming ``<prefix>.<key>=<value>`` for the first value below 1
    (config keys that count something: images, epochs, tokens, sizes)."""
    for key, value in values.items():
        if value < 1:
            raise UserError(f"{prefix}.{key}={value}: must be a positive integer.")


def user_message(exc: UserError) -> str:
    """The user-facing text of ``exc``, without a DataLoader worker's traceback.

    Errors raised in DataLoader worker processes are re-raised in the main process with the
    worker's traceback prepended to the message; only the original message is wanted.
    """
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if "Original Traceback" in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()
