"""Meta-train MAML-TRPO on 2D navigation: ``python scripts/train_navigation.py [--set k=v ...]``.

The same as ``metarl train navigation``; every option of that command works here.
"""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "navigation", *sys.argv[1:]]))
