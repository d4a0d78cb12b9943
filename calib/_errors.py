"""The error a user can cause during capture, analysis or database work."""


class CalibError(RuntimeError):
    """Bad calibration input: one sentence naming the file or setting and what to do."""
