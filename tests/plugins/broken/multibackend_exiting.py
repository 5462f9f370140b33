"""A plugin that calls sys.exit while being imported."""

import sys

sys.exit("multibackend_exiting: gave up on purpose")
