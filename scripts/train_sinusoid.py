"""Meta-train sinusoid regression: ``python scripts/train_sinusoid.py [--set key=value ...]``."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "sinusoid", *sys.argv[1:]]))
