"""Prints when it started and ended (wall clock), holding its slot for HOLD seconds in between."""
import os
import time

index = os.environ.get("FEDCTL_ARRAY_INDEX", "-")
print(f"start {time.time():.6f} index {index}", flush=True)
time.sleep(float(os.environ.get("HOLD", "1")))
print(f"end {time.time():.6f} index {index}", flush=True)
