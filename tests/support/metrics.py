"""Scraping chatd's Prometheus endpoint (docs/protocol.md §11) over real HTTP: a chatd with
metrics on a free port, one GET, a scrape parsed with prometheus_client's own parser (so what is
checked is what Prometheus would read), and a wait for a value; for test_metrics.py,
test_metrics_config.py and test_bounds.py."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(chatd, interval: float | None = 0.0, **sections):
    """A chatd with metrics on a free port; returns (server, port). ``interval``: its
    ``metrics_interval``, 0 (every scrape collects: these tests check values, not the
    reuse of a collection, test_bounds.py does) or None (the default)."""
    port = free_port()
    metrics = {"metrics_port": port}
    if interval is not None:
        metrics["metrics_interval"] = interval
    srv = chatd(metrics=metrics, **sections)
    event = srv.wait_event("metrics_listening")
    assert event["port"] == port and event["host"] == "127.0.0.1"
    return srv, port


def get(port: int, path: str = "/metrics", timeout: float = 5.0):
    """(status, content type, body text) of one GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def scrape(port: int) -> dict:
    """Sample name (with labels as a sorted tuple) -> value, plus the families by name."""
    status, content_type, body = get(port)
    assert status == 200, (status, body)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_metric(port: int, name: str, predicate, timeout: float = 10.0, **labels) -> dict:
    """Scrape until ``predicate(value)``; returns that scrape."""
    key = (name, tuple(sorted(labels.items())))
    last: dict = {}

    def matched():
        last.update(samples=scrape(port))
        got = last["samples"].get(key)
        return got is not None and predicate(got)

    wait_until(matched, timeout,
               what=lambda: f"{name}{labels} (it is {last['samples'].get(key)})")
    return last["samples"]
