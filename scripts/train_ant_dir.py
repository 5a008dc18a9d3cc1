"""Meta-train ant-dir with MAML-TRPO (= ``metarl train ant-dir``; takes the same options)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "ant-dir", *sys.argv[1:]]))
