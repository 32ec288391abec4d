"""The torture suite's quick profile, as CI runs it: every scenario, real
accelerator, every byte checked (tests/stress)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.stress.scenarios import SCENARIOS


@pytest.mark.timeout(900)
def test_quick_torture_loses_reorders_duplicates_and_misdelivers_nothing(tmp_path):
    out = tmp_path / "torture.json"
    res = subprocess.run([sys.executable, "-m", "tests.stress", "--quick", "--json", str(out)], capture_output=True, text=True, timeout=880)
    report = json.loads(out.read_text()) if out.exists() else {}
    assert res.returncode == 0, f"torture failed (exit {res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    rows = {r["scenario"]: r for r in report["scenarios"]}
    assert set(rows) == set(SCENARIOS)
    for name, r in rows.items():
        assert r["faults"] == 0, (name, r)
        assert r["connections"] > 0 and r["bytes_verified"] > 0, (name, r)
    for fault in ("lost", "reordered", "duplicated", "corrupted", "misdelivered", "stalled"):
        assert sum(r[fault] for r in rows.values()) == 0, fault
    # The scenarios did what they claim, not just "no error".
    assert rows["churn"]["facts"]["counters"]["redirected_bytes"] > 0
    assert rows["sockhash_full"]["facts"]["insert_failed"] > 0
    assert rows["abortive_close"]["aborted_on_purpose"] > 0
    assert rows["controller_churn"]["facts"]["controller_actions"] >= 3
    assert rows["isolation"]["facts"]["namespaces"] >= 8
    assert rows["tuple_reuse"]["facts"]["reused_while_held"] > 0
    assert rows["half_close"]["facts"]["fallback_shut"] > 0  # sends raced the FIN and met the check
    # One wait and one return, deterministically (flow_control's own are left
    # to its random pauses in this profile; the soak requires them).
    slow_facts = rows["slow_receiver"]["facts"]
    assert slow_facts["moved_wait"] >= 1 and slow_facts["returned"] >= 1, slow_facts
    rel = rows["release"]["facts"]
    assert rel["not_released"] == 0 and rel["controller_kills"] >= 1 and rel["fallback_retiring"] > 0, rel
    assert rows["slow_receiver"]["facts"]["accepted_vs_plain"] <= 2
    slow = rows["slow_receiver"]["facts"]
    assert slow["plain"]["eagain"] > 0  # plain TCP pushes back on a sender
    # Each scenario's own counters (churn's above, release's here), not the
    # run's final ones: release restarts the controller and its idle pins go.
    assert rel["redirected_bytes"] > 0
