"""Meta-train halfcheetah-dir with MAML-TRPO (= ``metarl train halfcheetah-dir``)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "halfcheetah-dir", *sys.argv[1:]]))
