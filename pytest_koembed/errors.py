"""The one exception type users see: a single line naming the problem and the fix."""


class KoembedError(Exception):
    """A user-facing problem (bad input, missing data, unusable model).

    The message is one line that says what is wrong and how to fix it; the plugin shows it
    instead of a traceback.
    """


class HubDownloadError(KoembedError):
    """Task data could not be downloaded from the Hub. ``problem`` is the message without the
    advice, so that a caller with other advice to give (``koembed mirror``) can give its own."""

    def __init__(self, problem: str, advice: str) -> None:
        super().__init__(f"{problem}; {advice}")
        self.problem = problem
