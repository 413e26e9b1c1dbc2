"""The one exception type the CLI turns into a one-line message.

Anything a user can fix (a bad parameter, a missing file, a server that is not
running) raises `UserError`; the CLI prints `deepfake-audio: error: <message>`
and exits non-zero without a traceback. Everything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message is shown as one line."""
