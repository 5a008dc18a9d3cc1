"""Meta-train halfcheetah-vel with MAML-TRPO (= ``metarl train halfcheetah-vel``)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "halfcheetah-vel", *sys.argv[1:]]))
