"""Meta-train ant-goal with MAML-TRPO (= ``metarl train ant-goal``; takes the same options)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "ant-goal", *sys.argv[1:]]))
