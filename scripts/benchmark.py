"""The benchmark suite: ``python scripts/benchmark.py --suite quick`` (= ``metarl bench``)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
