"""`python -m rsseg ...` is the `rsseg` command (the worker client starts `python -m rsseg serve`)."""

import sys

from .cli.main import main

sys.exit(main())
