"""Summarise insurance claims on the US site that holds them."""
import csv
import os
from collections import defaultdict

totals = defaultdict(float)
with open(os.environ["FEDCTL_DATASET_CLAIMS_US"], newline="") as f:
    for row in csv.DictReader(f):
        totals[row["procedure"]] += float(row["amount_usd"])
top = max(totals, key=totals.get)
print(f"{len(totals)} procedures, ${sum(totals.values()):,.0f} in claims, most spent on {top} "
      f"at {os.environ['FEDCTL_SITE']}")
