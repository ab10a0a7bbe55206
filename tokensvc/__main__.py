"""`python -m tokensvc`, as the `tokensvc` console script."""

import sys

from .cli import main

sys.exit(main())
