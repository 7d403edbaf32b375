"""``python -m repmatch.cli``: the same as the ``repmatch`` command."""

import sys

from repmatch.cli import main

sys.exit(main())
