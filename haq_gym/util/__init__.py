"""Small helpers every part of the package shares: atomic file writes and the known-keys check."""

from haq_gym.util.files import write_atomic
from haq_gym.util.keys import check_known_keys

__all__ = ["check_known_keys", "write_atomic"]
