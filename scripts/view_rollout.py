"""Render a meta-RL policy's adaptation (= ``metarl view RUN_DIR [options]``)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["view", *sys.argv[1:]]))
