"""``python -m haq_gym.export``: see :mod:`haq_gym.export.cli`."""

import sys

from haq_gym.export.cli import main

sys.exit(main())
