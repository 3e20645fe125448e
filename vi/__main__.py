"""``python -m vi``: the ``vifit`` command line, for where the script is not on the path."""

import sys

from vi.cli import main

if __name__ == "__main__":
    sys.exit(main())
