"""The one exception type users see: a single line naming the problem and the fix."""


class KoembedError(Exception):
    """A user-facing problem (bad input, missing data, unusable model).

    The message is one line that says what is wrong and how to fix it; the plugin shows it
    instead of a traceback.
    """
