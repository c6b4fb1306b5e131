"""Per-key limits hold across two API replicas: a key cannot get twice its share by being served
by both. Its own release (rate and concurrency set low), called from a pod inside the cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.kube import Release

BURST = 12
CONCURRENT = 2


@pytest.fixture(scope="module")
def limited(installed_release, request: pytest.FixtureRequest) -> Iterator[Release]:
    """A release with the rate and the concurrency per key set low."""
    with installed_release(request.node.nodeid, "--set", "api.replicas=2", "--set", "operator.replicas=1",
                           "--set", "api.ratePerMinute=1", "--set", f"api.rateBurst={BURST}",
                           "--set", f"api.maxConcurrentPerKey={CONCURRENT}") as installed:
        yield installed


def test_concurrency_and_rate_hold_across_both_replicas(limited):
    first, second = limited.api_pod_urls()
    # Concurrency: four long executions, alternating replicas; only CONCURRENT are admitted.
    statuses = [
        limited.execute(url, "python", "import time; time.sleep(30)", wait=False)[0]
        for url in (first, second, first, second)
    ]
    assert sorted(statuses) == [202] * CONCURRENT + [429] * (4 - CONCURRENT), statuses
    # Rate: the four calls above took four tokens of the burst; the rest of it is shared too.
    answers = [limited.call("GET", f"{url}/api/sandbox/languages")[0] for url in (first, second) * (BURST // 2)]
    allowed = answers.count(200)
    # One token a minute may drip in while the test runs; a per-replica bucket would allow all 12.
    assert BURST - 4 <= allowed <= BURST - 3, answers
    assert set(answers) <= {200, 429}
