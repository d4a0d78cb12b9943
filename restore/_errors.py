"""The error a user can cause while restoring photos."""


class RestoreError(RuntimeError):
    """Bad restore input: one sentence naming the photo or setting and what to do."""
