"""`python -m gen ...`: the `gen` command, also under `accelerate launch -m gen generate ...`."""

import sys

from gen.cli import main

sys.exit(main())
