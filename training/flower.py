"""Flower code as a training's local step, unchanged: `local_step.entrypoint` names a Flower
`ClientApp` (built from a `client_fn`, or with `@app.train()` functions) or a `NumPyClient` /
`Client` instance, and the site's worker runs it with the global model in and the update out, while
the federation does the placement, sovereignty, secure aggregation and privacy. `flwr` is an
optional extra (`pip install fedctl[flower]`).

The app is called as a SuperNode would call it, one `train` message a round, so its mods run too:
- A `client_fn` app gets FitIns with the global model's arrays as a list (in the sorted order of
  their names, `p000`, `p001`... when the app made them) and the step's config (the round, the
  epochs...); its FitRes gives the update, the examples and the metrics. In the first round, with no
  global model yet, it is asked for its parameters first (`get_parameters`).
- A Message API app gets `arrays` (an ArrayRecord; none in the first round: it starts from its own)
  and `config`; its reply's `arrays` is the update and `metrics["num-examples"]` the examples, as
  Flower's own strategies read them.
Its Context: `node_config` has `data-path` (this site's dataset, which never leaves it), and
`partition-id` and `num-partitions` (this site's place among the round's participants, for apps
that split one dataset: it moves when the participants change); `run_config` is the step's config.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

Model = dict[str, np.ndarray]


def is_flower(target: Any) -> bool:
    """Whether `target` is Flower's: a ClientApp, or a client instance."""
    return any(c.__module__.split(".")[0] == "flwr" for c in type(target).__mro__)


def local_step(target: Any, model: Model | None, data: str, config: dict[str, Any]) -> tuple[Model, int, dict]:
    """`target` run as one round's local step: (trained model, examples, metrics)."""
    from flwr.clientapp import ClientApp
    app = target if isinstance(target, ClientApp) else ClientApp(client_fn=lambda context: _client(target))
    context = _context(data, config)
    names = sorted(model or {})
    given = [model[k] for k in names] if model else None
    if getattr(app, "_call", None) is not None:   # built from a client_fn: Flower's FitIns and FitRes
        trained, examples, metrics = _fit(app, context, given or _parameters(app, context))
    else:
        trained, examples, metrics = _train(app, context, given)
    if not trained:
        raise ValueError("the Flower client's fit returned no parameters")
    keys = names if names and len(names) == len(trained) else [f"p{i:03d}" for i in range(len(trained))]
    return dict(zip(keys, trained)), examples, metrics


def _client(target: Any) -> Any:
    from flwr.client import NumPyClient
    return target.to_client() if isinstance(target, NumPyClient) else target


def _context(data: str, config: dict[str, Any]) -> Any:
    from flwr.app import Context, RecordDict
    participants = list(config.get("participants") or [os.environ.get("FEDCTL_SITE", "")])
    site = os.environ.get("FEDCTL_SITE", "")
    part, size = (participants.index(site) if site in participants else 0), len(participants)
    run_config = {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}
    return Context(run_id=0, node_id=part + 1, state=RecordDict(), run_config=run_config,
                   node_config={"partition-id": part, "num-partitions": size, "data-path": data})


def _parameters(app: Any, context: Any) -> list[np.ndarray]:
    from flwr.common import GetParametersIns, parameters_to_ndarrays
    from flwr.common.constant import MessageTypeLegacy
    from flwr.compat.common.recorddict_compat import getparametersins_to_recorddict, recorddict_to_getparametersres
    reply = _call(app, context, MessageTypeLegacy.GET_PARAMETERS,
                  getparametersins_to_recorddict(GetParametersIns(config={})))
    arrays = list(parameters_to_ndarrays(recorddict_to_getparametersres(reply, keep_input=False).parameters))
    if not arrays:
        raise ValueError("the Flower client's get_parameters gave no arrays: the first round has no global model, "
                         "and starts from the client's own")
    return arrays


def _fit(app: Any, context: Any, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], int, dict]:
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres
    ins = FitIns(ndarrays_to_parameters(arrays), context.run_config)
    res = recorddict_to_fitres(_call(app, context, "train", fitins_to_recorddict(ins, keep_input=True)),
                               keep_input=False)
    return list(parameters_to_ndarrays(res.parameters)), int(res.num_examples), dict(res.metrics)


def _train(app: Any, context: Any, arrays: list[np.ndarray] | None) -> tuple[list[np.ndarray], int, dict]:
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict
    content = RecordDict({"config": ConfigRecord(context.run_config)})
    if arrays is not None:
        content["arrays"] = ArrayRecord(arrays)
    reply = _call(app, context, "train", content)
    metrics = dict(reply["metrics"]) if "metrics" in reply else {}
    if "num-examples" not in metrics:
        raise ValueError("the ClientApp's train reply has no metrics['num-examples']: the federation weighs "
                         "each site's update by it")
    trained = reply["arrays"].to_numpy_ndarrays()
    return trained, int(metrics.pop("num-examples")), metrics


def _call(app: Any, context: Any, message_type: str, content: Any) -> Any:
    from flwr.app import Message, Metadata
    metadata = Metadata(run_id=context.run_id, message_id=f"{message_type}-{time.time_ns()}", src_node_id=0,
                        dst_node_id=context.node_id, reply_to_message_id="", group_id=str(context.run_config.get(
                            "round", "")), created_at=time.time(), ttl=86400.0, message_type=message_type)
    # With its metadata given, as a SuperNode hands a ClientApp the messages it receives; Flower's
    # public constructor wants the identity of a Flower run this process does not have.
    reply = app(Message(content=content, metadata=metadata), context)  # type: ignore[call-overload]
    if reply.has_error():
        raise RuntimeError(f"the ClientApp answered {message_type} with an error: {reply.error.reason}")
    return reply.content
