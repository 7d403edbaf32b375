"""``python -m repmatch`` (and ``torchrun -m repmatch``): the same as the ``repmatch`` command."""

import sys

from repmatch.cli import main

sys.exit(main())
