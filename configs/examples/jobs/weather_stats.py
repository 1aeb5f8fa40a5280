"""Average temperature from a public dataset."""
import csv
import os

with open(os.environ["FEDCTL_DATASET_OPEN_WEATHER"], newline="") as f:
    temps = [float(r["temp_c"]) for r in csv.DictReader(f)]
print(f"mean {sum(temps) / len(temps):.1f} C over {len(temps)} days at {os.environ['FEDCTL_SITE']}")
