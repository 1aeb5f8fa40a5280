"""Writes to a shared ledger (LEDGER) when it starts, every TICK seconds while it runs, and when
it ends after HOLD seconds: the fault tests read it to prove no job ran twice or in two places.
With a checkpoint path it keeps the ticks done there, and a resumed attempt does only the rest."""
import os
import time

ledger = os.environ["LEDGER"]
me = f"{os.environ['FEDCTL_JOB_ID']} {os.environ['FEDCTL_ATTEMPT']} {os.environ['FEDCTL_SITE']}"


def write(event: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {me} {time.time():.3f}\n".encode())
    finally:
        os.close(fd)


checkpoint = os.environ.get("FEDCTL_CHECKPOINT_PATH")
tick = float(os.environ.get("TICK", "0.2"))
ticks = round(float(os.environ.get("HOLD", "1")) / tick)
done = 0
if checkpoint and os.environ.get("FEDCTL_RESUME") == "1" and os.path.exists(checkpoint):
    with open(checkpoint) as f:
        done = int(f.read())
    print(f"resumed at tick {done} of {ticks}", flush=True)
write("start")
while done < ticks:
    time.sleep(tick)
    done += 1
    write("tick")
    if checkpoint:
        with open(checkpoint + ".new", "w") as f:
            f.write(str(done))
        os.replace(checkpoint + ".new", checkpoint)
write("end")
