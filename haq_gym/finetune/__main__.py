"""``python -m haq_gym.finetune``: the finetune command of :mod:`haq_gym.finetune.command`."""

import sys

from haq_gym.finetune.command import main

if __name__ == "__main__":
    sys.exit(main())
