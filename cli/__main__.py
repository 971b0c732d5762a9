"""``python -m cli ...`` is ``suite ...``."""

import sys

from cli.main import main

sys.exit(main())
