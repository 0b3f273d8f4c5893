"""The node agent's process: ``python -m kubenpu.devcluster.nodeagent CONFIG.json``."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from kubenpu.devcluster.nodeagent.agent import NodeAgent
from kubenpu.devcluster.nodeagent.config import AgentConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m kubenpu.devcluster.nodeagent CONFIG.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m kubenpu.devcluster.nodeagent CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(message)s",
    )
    # The Kubernetes client logs every retry of its HTTP pool at WARNING; ours say enough.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    agent = NodeAgent(AgentConfig.load(args[0]))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop_event.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
