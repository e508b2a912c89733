"""The one exception type that the CLI turns into a single line for the user."""

from __future__ import annotations


class VitprintError(ValueError):
    """A problem with the user's input or environment, stated in plain words.

    ``settings`` names the settings the message is about, by their library names
    (``"assume_prevalence"``, ``"out"``); the library's words never name a command-line
    flag, and the CLI adds its flags for them. It prints ``vitprint: error: <message>``
    and exits with status 2; with ``--debug`` it shows the traceback instead.
    """

    def __init__(self, message: str, settings: tuple[str, ...] | str = ()):
        super().__init__(message)
        self.settings = (settings,) if isinstance(settings, str) else tuple(settings)
