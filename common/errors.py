"""Errors that cross the network between parties and keep their meaning."""


class Refusal(Exception):
    """A release the privacy policy does not allow. `code` is stable for
    tests, logs and the HTTP API (403 {"refused": code, "message": ...})."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
