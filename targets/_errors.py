"""The error a user can cause while making or reading charts."""


class TargetError(ValueError):
    """Bad chart input: one sentence naming the setting or file and what to do."""
