#!/usr/bin/env python3
"""Prints the median of every criterion benchmark under target/criterion (README's figures)."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
for estimates in sorted(root.glob("**/new/estimates.json")):
    name = estimates.parent.parent.relative_to(root)
    median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
    print(f"{str(name):45} median {median_ns / 1000:10.2f} µs")
