"""A 4096x4096 large image within 24 GB peak RSS, with the time it takes.

    python -m benchmarks.scale [--size 4096] [--steps 2]

Runs benchmarks.large_image's single-size worker in a fresh process. Writes results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import add_output_argument, save

LIMIT_MB = 24 * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tile-batch", type=int, default=32)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.large_image", "--one", str(args.size), "--steps", str(args.steps), "--tile-batch", str(args.tile_batch)],
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["limit_mb"] = LIMIT_MB
    row["within_limit"] = row["peak_rss_mb"] <= LIMIT_MB
    print(
        f"{args.size}x{args.size}, {args.steps} steps: {row['seconds']:.1f}s, peak RSS {row['peak_rss_mb']:.0f} MB (limit {LIMIT_MB} MB): {'ok' if row['within_limit'] else 'OVER'}"
    )
    save("scale", row, out=args.out)
    return row


if __name__ == "__main__":
    main()
