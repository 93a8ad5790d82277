"""Three ReinforceAgent updates (baseline + entropy) under a strategy; run by test_agent.py.

Prints one JSON line with the logged loss terms and the final weights; a MirroredStrategy run over 2
logical CPUs must equal the one-device run of the same global batches.

    python tests/rl/mirrored_agent_job.py --strategy mirrored --devices 2
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kerasce import distribute  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategy", default="default", choices=distribute.STRATEGIES)
    parser.add_argument("--devices", type=int, default=1, help="logical CPU devices")
    args = parser.parse_args()
    if args.devices > 1:
        distribute.split_cpu(args.devices)
    strategy = distribute.get_strategy(args.strategy)
    from kerasce.rl import ReinforceAgent

    with strategy.scope():
        agent = ReinforceAgent((4,), 2, seed=0, baseline=True, ent_coef=0.1)
    rng = np.random.default_rng(0)
    logs = []
    for n in (16, 30, 64):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        a = rng.integers(0, 2, n).astype(np.int32)
        g = rng.normal(size=n).astype(np.float32)
        logs.append(agent._train_on_batch(x, a, g))
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "logs": logs,
        "weights": [w.tolist() for w in agent.get_weights()],
    }))


if __name__ == "__main__":
    main()
