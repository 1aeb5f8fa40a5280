"""Prints where it ran and what it read, then optionally sleeps and fails on request."""
import os
import sys
import time

site = os.environ["FEDCTL_SITE"]
lines = int(os.environ.get("LINES", "1"))
for i in range(lines):
    print(f"line {i} from {site}", flush=True)
    if i + 1 < lines:
        time.sleep(float(os.environ.get("PAUSE", "0.3")))
for name, value in sorted(os.environ.items()):
    if name.startswith("FEDCTL_DATASET_"):
        with open(value) as f:
            print(f"{name}: {sum(1 for _ in f)} lines", flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(os.environ.get("EXIT", "0")))
