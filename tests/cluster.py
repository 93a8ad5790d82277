"""A local multi-worker cluster for tests: one TF_CONFIG per worker, on free ports of 127.0.0.1."""

import json
import socket


def tf_configs(num_workers: int = 2) -> list[str]:
    """TF_CONFIG values for `num_workers` workers on 127.0.0.1; worker 0 is the chief."""
    sockets = [socket.socket() for _ in range(num_workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(num_workers)]
