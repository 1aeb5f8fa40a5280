"""A job with no data: anywhere it fits."""
import os
import platform

print(f"hello from {os.environ['FEDCTL_SITE']} (job {os.environ['FEDCTL_JOB_ID']}, python {platform.python_version()})")
