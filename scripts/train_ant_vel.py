"""Meta-train ant-vel with MAML-TRPO (= ``metarl train ant-vel``; takes the same options)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "ant-vel", *sys.argv[1:]]))
