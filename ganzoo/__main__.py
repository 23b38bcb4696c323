import sys

from .cli import main

if __name__ == "__main__":  # guarded: `bench --jobs N` children import this module again (multiprocessing spawn)
    sys.exit(main())
