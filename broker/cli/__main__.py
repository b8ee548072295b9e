"""``python -m broker.cli``."""

import sys

from broker.cli import main

sys.exit(main())
