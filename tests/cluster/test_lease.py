"""The lease rules that keep one publishing actor per camera (no Ray needed)."""

from __future__ import annotations

import pytest

from streamer.cluster.lease import LeaseTable

pytestmark = pytest.mark.cluster


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time_until_its_lease_runs_out() -> None:
    clock = Clock()
    table = LeaseTable(3.0, clock=clock)
    first = table.acquire("door", "a")
    assert first.granted and first.epoch > 0
    denied = table.acquire("door", "b")
    assert not denied.granted and denied.holder == "a" and denied.retry_s == pytest.approx(3.0)
    clock.now += 2.0
    assert table.renew("door", "a", first.epoch).granted  # valid until 105 now
    clock.now += 2.5
    assert not table.acquire("door", "b").granted
    clock.now += 0.6
    second = table.acquire("door", "b")  # a's lease ran out
    assert second.granted and second.epoch > first.epoch
    assert not table.renew("door", "a", first.epoch).granted  # a is fenced
    assert table.acquire("yard", "a").granted  # cameras are independent
    assert table.snapshot()["door"]["grants"] == 2


@pytest.mark.parametrize(
    ("holder", "epoch_delta"), [("b", 0), ("a", 1)], ids=["other-holder", "stale-epoch"]
)
def test_renew_refuses_anyone_but_the_current_epoch(holder: str, epoch_delta: int) -> None:
    table = LeaseTable(3.0, clock=Clock())
    grant = table.acquire("door", "a")
    assert not table.renew("door", holder, grant.epoch + epoch_delta).granted
    assert table.renew("door", "a", grant.epoch).granted


def test_released_lease_is_free_at_once_and_a_restarted_registry_waits() -> None:
    clock = Clock()
    table = LeaseTable(3.0, clock=clock)
    grant = table.acquire("door", "a")
    assert table.release("door", "a", grant.epoch)
    assert table.acquire("door", "b").granted
    restarted = LeaseTable(3.0, quiet_s=3.0, clock=clock)  # forgot every lease
    assert not restarted.acquire("door", "c").granted
    clock.now += 3.01
    later = restarted.acquire("door", "c")
    assert later.granted and later.epoch > grant.epoch  # epochs grow across restarts
