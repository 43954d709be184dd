"""``python -m napari_emdenoise.cli``: the ``emdenoise`` command."""

import sys

from . import main

sys.exit(main())
