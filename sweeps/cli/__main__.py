"""`python -m sweeps.cli`: the `stoprace` command (what a Ray Job's entrypoint runs when code is shipped)."""

import sys

from sweeps.cli import main

if __name__ == "__main__":  # not when a module walk imports it
    sys.exit(main())
