"""How often the node TCP budget is read (accel/budget.py, next_wait): as
often as asked near the threshold, at most once a second far from it, and
never later than TCP memory growing at GROWTH_RATE could reach it."""

from __future__ import annotations

from accel.budget import GROWTH_RATE, LONGEST_WAIT, next_wait

BUDGET = 1500 << 20


def test_an_idle_node_is_read_once_a_second():
    assert next_wait(4 << 20, 64 << 30, 0.05) == LONGEST_WAIT


def test_near_or_over_the_threshold_the_short_interval_applies():
    assert next_wait(BUDGET - (1 << 20), BUDGET, 0.05) == 0.05
    assert next_wait(BUDGET + (1 << 20), BUDGET, 0.05) == 0.05


def test_the_wait_never_lets_memory_reach_the_threshold_unseen():
    for mem in range(0, BUDGET, 37 << 20):
        wait = next_wait(mem, BUDGET, 0.05)
        assert 0.05 <= wait <= LONGEST_WAIT
        assert mem + wait * GROWTH_RATE <= BUDGET or wait == 0.05
