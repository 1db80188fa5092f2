"""FRAUDAR dense-block scan on hand-built graphs, including camouflage."""

from __future__ import annotations

import random

from followers.scan import fraudar, graph_from_events, scan_events
from tests.followers.conftest import T0, ev


def _graph(camouflage: int) -> list:
    rng = random.Random(9)
    events = []
    for i in range(2000):  # honest: a few follows each, power-law targets
        for _ in range(rng.randint(1, 4)):
            events.append(ev(T0 + rng.uniform(0, 86400), f"h{i}", f"t{int(rng.paretovariate(1.0)) % 800}",
                             created=T0 - 900 * 86400))
    for i in range(50):  # a pool of 50 fakes each following the same 20 bought targets
        for j in range(20):
            events.append(ev(T0 + rng.uniform(0, 86400), f"fake{i}", f"bought{j}", created=T0 - 900 * 86400))
        for _ in range(camouflage):  # plus popular accounts, to look normal
            events.append(ev(T0 + rng.uniform(0, 86400), f"fake{i}", f"t{rng.randrange(5)}", created=T0 - 900 * 86400))
    return events


def test_dense_pool_is_the_first_block_even_with_camouflage() -> None:
    """50 fakes x 20 bought targets is found as the first block, also when each fake adds 200
    follows of popular accounts (10x its bought follows)."""
    for camouflage in (0, 200):
        _, blocks = scan_events(_graph(camouflage), blocks=2, eps=0.02)
        first = blocks[0]
        fakes = {a for a in first.actors if a.startswith("fake")}
        assert len(fakes) >= 45 and len(fakes) / len(first.actors) >= 0.9
        assert {f"bought{j}" for j in range(20)} <= set(first.targets)
        assert first.lift > 2


def test_unfollows_remove_edges_and_priors_come_from_risk() -> None:
    """The graph is the current one (an unfollow removes the edge); priors are the risk scores."""
    events = [ev(T0, "a", "t"), ev(T0 + 1, "a", "t", action="unfollow"), ev(T0 + 2, "b", "t", created=T0)]
    graph = graph_from_events(events)
    assert graph.edges == 1
    assert graph.prior[graph.actors.index("b")] > 0.9 and graph.prior[graph.actors.index("a")] == 0.0
    assert fraudar(graph, min_actors=5) == []
