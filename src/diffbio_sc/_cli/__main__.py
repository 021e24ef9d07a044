"""``python -m diffbio_sc._cli``: the same as the ``dfm`` command."""

import sys

from . import main

sys.exit(main())
