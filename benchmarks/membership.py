"""Membership benchmark: how well each detector finds training images (same as `vitprint bench`).

    python benchmarks/membership.py --scale cpu --out runs/bench-cpu --docs docs/benchmarks.md
"""

from vitprint.cli import main

if __name__ == "__main__":
    import sys

    raise SystemExit(main(["bench", *sys.argv[1:]]))
