"""Tokenize patient notes where they live; only counts leave the site."""
import collections
import csv
import os

path = os.environ["FEDCTL_DATASET_PATIENT_RECORDS_EU"]
tokens = collections.Counter()
with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
for row in rows:
    tokens.update(row["note"].lower().replace(",", " ").split())
print(f"tokenized {len(rows)} records into {sum(tokens.values())} tokens ({len(tokens)} distinct) "
      f"at {os.environ['FEDCTL_SITE']}")
