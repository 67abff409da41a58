"""A real Redis Cluster for the tests: three redis-server masters on loopback,
built by hand the way redis-cli --cluster create does it: each node gets a third
of the 16384 hash slots (CLUSTER ADDSLOTS), they meet (CLUSTER MEET), and we wait
until every node reports cluster_state:ok."""

from __future__ import annotations

import random
import socket
import time
from contextlib import closing
from pathlib import Path

import redis

from whystream.infra.stack import Child, _port_open, _start, redis_binary

SLOTS = 16384
BUS_OFFSET = 10000  # a node also listens on port + 10000 (the cluster bus), so port <= 55535


def cluster_port() -> int:
    """A free loopback port whose cluster bus port is free too."""
    for _ in range(1000):
        port = random.randint(20000, 65535 - BUS_OFFSET)
        if all(_free(p) for p in (port, port + BUS_OFFSET)):
            return port
    raise AssertionError("no free port pair for a Redis cluster node")


def _free(port: int) -> bool:
    with closing(socket.socket()) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start_cluster(home: Path, masters: int = 3, timeout: float = 30.0) -> tuple[list[Child], list[int]]:
    children, ports = [], []
    try:
        for i in range(masters):
            port = cluster_port()
            data = home / f"node-{port}"
            data.mkdir(parents=True, exist_ok=True)
            argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(data), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "5000"]
            children.append(_start(f"Redis cluster node {i}", argv, home / "logs" / f"redis-{port}.log",
                                   lambda p=port: _port_open(p), 20, "Check the redis-server binary"))
            ports.append(port)
        nodes = [redis.Redis(port=p) for p in ports]
        share = SLOTS // masters
        for i, node in enumerate(nodes):
            end = SLOTS if i == masters - 1 else (i + 1) * share
            node.execute_command("CLUSTER ADDSLOTS", *range(i * share, end))
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
        deadline = time.monotonic() + timeout
        while not all(_state(node) == "ok" for node in nodes):
            if time.monotonic() > deadline:
                raise AssertionError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        # Every node must also know every other's slots before a client asks it.
        while not all(len(node.execute_command("CLUSTER SLOTS")) == masters for node in nodes):
            if time.monotonic() > deadline:
                raise AssertionError("the Redis cluster nodes did not agree on the slot map")
            time.sleep(0.1)
        for node in nodes:
            node.close()
        return children, ports
    except BaseException:
        for child in children:
            child.stop()
        raise


def _state(node: redis.Redis) -> str:
    info = node.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    state = info.get("cluster_state", "") if isinstance(info, dict) else ""
    return state.decode() if isinstance(state, bytes) else state
