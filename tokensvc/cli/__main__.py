"""`python -m tokensvc.cli`, as the `tokensvc` console script."""

import sys

from . import main

sys.exit(main())
