"""``python -m embed ARGS`` is ``jsae embed ARGS``."""
import sys

from jsae.embed.cli import main

if __name__ == "__main__":
    sys.exit(main())
