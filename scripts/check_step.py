"""KL and loss along one TRPO step against the quadratic model (= ``metarl check-step``)."""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["check-step", *sys.argv[1:]]))
