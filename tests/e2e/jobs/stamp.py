"""Prints when it started and ended (wall clock), holding its slot for HOLD seconds in between;
with MARK, the first run (the one that creates the file MARK) holds HOLD_FIRST seconds instead."""
import os
import time

index = os.environ.get("FEDCTL_ARRAY_INDEX", "-")
print(f"start {time.time():.6f} index {index}", flush=True)
hold = float(os.environ.get("HOLD", "1"))
mark = os.environ.get("MARK")
if mark and not os.path.exists(mark):
    open(mark, "w").close()
    hold = float(os.environ.get("HOLD_FIRST", hold))
time.sleep(hold)
print(f"end {time.time():.6f} index {index}", flush=True)
