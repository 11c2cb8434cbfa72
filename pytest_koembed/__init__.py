"""pytest-koembed: the Korean text-embedding leaderboard as a pytest regression suite.

The public Python surface is what ``__all__`` names; everything else (the subpackages listed in
docs/architecture.md) is internal and may change between releases. Most users never import this
package: the pytest options (``--koembed-*``) and the ``koembed`` command are the interface.
"""

from pytest_koembed._version import __version__
from pytest_koembed.errors import KoembedError
from pytest_koembed.models.protocol import Encoder
from pytest_koembed.protocol.spec import CATEGORIES, Suite, TaskSpec
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.records import TaskScore, read_run_record

__all__ = [
    "CATEGORIES",
    "Encoder",
    "KoembedError",
    "Suite",
    "TaskScore",
    "TaskSpec",
    "__version__",
    "load_suite",
    "read_run_record",
]
