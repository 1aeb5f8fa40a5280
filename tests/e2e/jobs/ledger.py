"""Writes to a shared ledger (LEDGER) when it starts, every TICK seconds while it runs, and when
it ends after HOLD seconds: the fault tests read it to prove no job ran twice or in two places."""
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


write("start")
end = time.monotonic() + float(os.environ.get("HOLD", "1"))
while time.monotonic() < end:
    time.sleep(float(os.environ.get("TICK", "0.2")))
    write("tick")
write("end")
