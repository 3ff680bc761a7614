"""``python -m verify``: the same as the ``marl-oracle`` command."""

import sys

from verify.cli import main

sys.exit(main())
