"""``python -m pytest_koembed.cli``: the ``koembed`` command."""

import sys

from pytest_koembed.cli import main

sys.exit(main())
