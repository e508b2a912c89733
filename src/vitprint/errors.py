"""The one exception type that the CLI turns into a single line for the user."""


class VitprintError(ValueError):
    """A problem with the user's input or environment, stated in plain words.

    The CLI prints ``vitprint: error: <message>`` and exits with status 2; with
    ``--debug`` it shows the traceback instead.
    """
