"""The site agent's side of an elastic site, without Ray: the autoscaler config it writes, the nodes
it counts, where it steers each attempt, which failures it takes for a vanished node, and the
quote explain gives for a site a job could have gone to."""
from __future__ import annotations

from federation.spec import job_from_dict
from federation.spec.pricing import Elastic
from policies import PendingJob, SiteView
from policies.explain import quote
from policies.pricing import ALLOW, NodeType, Pricing, Rates
from policies.pricing import Elastic as ElasticView
from site_agent.elastic import autoscaler_config, label_selector, nodes_up
from site_agent.plan import node_died
from site_agent.ray_driver import RayJob, RayNode
from site_agent.runner import EXIT_LINE, NODE_DIED

GiB = 2**30
ELASTIC = Elastic.model_validate({"idle_timeout": "30s", "node_types": [
    {"name": "cpu-od", "cpus": 4, "memory": "16Gi", "max": 2, "min": 1},
    {"name": "gpu-spot", "cpus": 8, "memory": "64Gi", "max": 3, "spot": True,
     "gpus": {"model": "A10G", "count": 1, "memory": "24Gi"}}]})


def body(**placement):
    spec = {"metadata": {"name": "j"}, "spec": {"entrypoint": "true", "placement": placement}}
    return job_from_dict(spec).spec


def test_the_autoscaler_config_mirrors_the_node_types_with_their_labels():
    cfg = autoscaler_config(ELASTIC, "192.0.2.2:20400", head_cpus=0)
    types = cfg["available_node_types"]
    assert cfg["provider"]["gcs_address"] == "192.0.2.2:20400" and cfg["idle_timeout_minutes"] == 0.5
    assert types["ray.head.default"]["resources"] == {"CPU": 0}
    assert types["cpu-od"]["labels"] == {"node-type": "cpu-od", "market": "on-demand"}
    assert (types["cpu-od"]["min_workers"], types["cpu-od"]["max_workers"]) == (1, 2)
    assert types["gpu-spot"]["resources"]["GPU"] == 1 and types["gpu-spot"]["labels"]["market"] == "spot"
    assert cfg["max_workers"] == 5 and "memory" not in types["cpu-od"]["resources"]


def test_nodes_are_counted_by_their_node_type_label_only():
    nodes = [RayNode({"node-type": "cpu-od"}, 0), RayNode({"node-type": "cpu-od"}, 0), RayNode({}, 0),
             RayNode({"node-type": "not-ours"}, 0)]
    assert nodes_up(nodes, ELASTIC) == {"cpu-od": 2, "gpu-spot": 0}


def test_an_attempt_goes_to_the_node_type_it_was_placed_for_or_off_spot_if_it_refuses_spot():
    assert label_selector(body(), ELASTIC, "gpu-spot") == {"node-type": "gpu-spot"}
    assert label_selector(body(), ELASTIC) == {"market": "on-demand"}          # spot: never by default
    assert label_selector(body(spot="allow"), ELASTIC) is None
    assert label_selector(body(), ELASTIC, "made-up") == {"market": "on-demand"}
    assert label_selector(body(), None, "cpu-od") is None                      # a fixed site steers nothing


def test_only_ray_s_own_words_make_a_failure_a_lost_node():
    died = ("Job supervisor actor died: The actor died unexpectedly before finishing this task.\n\tclass_name: "
            "JobSupervisor ... The actor died because its node has died. Node Id: fff")
    assert node_died(RayJob("s", "FAILED", died))
    assert node_died(RayJob("s", "FAILED", NODE_DIED + "Task failed because the node it was running on is dead"))
    # A job whose own output says so is still its own failure: Ray puts the output after its exit line.
    forged = EXIT_LINE.format(code=1) + ", last available logs:\nJob supervisor actor died: its node has died"
    assert not node_died(RayJob("s", "FAILED", forged))
    assert not node_died(RayJob("s", "FAILED", "Task failed: its node has died"))
    assert not node_died(RayJob("s", "SUCCEEDED", died))


def test_a_quote_names_the_price_and_when_it_would_start():
    pricing = Pricing(Rates(0.05, 0.0, {"A10G": 1.0}), Rates(0.02, 0.0, {"A10G": 0.4}), currency="EUR")
    elastic = ElasticView((NodeType("cpu-od", 4, 16.0 * GiB, max=2, start_s=90),
                           NodeType("cpu-spot", 4, 16.0 * GiB, max=1, spot=True, start_s=120)))
    full = SiteView("c", "DE", "eu", {}, cpus=0, memory=0, gpus=0, pricing=pricing, elastic=elastic)
    job = PendingJob("j", "t", cpus=2)
    assert quote(job, full) == "0.1 EUR/h, starts on a new cpu-od node in about 90 s"
    allows_spot = PendingJob("j", "t", cpus=2, spot=ALLOW)   # the sooner kind, on optimize: time
    assert quote(allows_spot, full) == "0.1 EUR/h, starts on a new cpu-od node in about 90 s"
    roomy = SiteView("c", "DE", "eu", {}, cpus=8, memory=32.0 * GiB, gpus=0, pricing=pricing)
    assert quote(job, roomy) == "0.1 EUR/h, starts now"
    assert quote(job, SiteView("f", "DE", "eu", {}, cpus=8, memory=0, gpus=0)) == ""
