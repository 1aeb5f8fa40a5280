"""Prints where the federation's reservation put this job: its GPUs and its placement group's nodes."""
import os

import ray
from ray.util import get_placement_group
from ray.util.placement_group import placement_group_table

ray.init(address="auto", namespace="fedctl", log_to_driver=False)
table = placement_group_table(get_placement_group(os.environ["FEDCTL_PLACEMENT_GROUP"]))
labels = {n["NodeID"]: (n.get("Labels") or {}).get("fedctl.io/node") for n in ray.nodes()}
print("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
print("placement group", table["state"], table["strategy"],
      "on", ",".join(sorted(labels[n] for n in table["bundles_to_node_id"].values())))
