"""The benchmark harness's own logic, without root: parsing each tool's real
output (recorded in bench_samples/), statistics, and the report and plots."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import crossover, noise, parse, report
from benchmarks.profiles import PROFILES
from benchmarks.stats import ratio, split, summarize
from benchmarks.workloads import human_size

SAMPLES = os.path.join(os.path.dirname(__file__), "bench_samples")


def sample(name: str) -> str:
    with open(os.path.join(SAMPLES, name)) as f:
        return f.read()


def test_iperf3_json():
    m = parse.iperf3(sample("iperf3.json"))
    assert m["gbit_per_s"] > 0.1 and m["bytes"] > 1e6 and 0.9 < m["seconds"] < 1.2


def test_iperf3_error_and_garbage_are_refused():
    with pytest.raises(parse.ParseError, match="unable to connect"):
        parse.iperf3('{"start": {}, "error": "unable to connect to server"}')
    with pytest.raises(parse.ParseError):
        parse.iperf3("iperf3: error - unable to send control message")


def test_sockperf_percentiles():
    m = parse.sockperf(sample("sockperf.txt"))
    assert 0 < m["p50_us"] <= m["p99_us"] <= m["p999_us"]
    assert m["count"] > 100 and m["mean_us"] > 0
    with pytest.raises(parse.ParseError):
        parse.sockperf("sockperf: usage: ...")


def test_redis_benchmark_csv():
    m = parse.redis_benchmark(sample("redis.csv"))
    assert set(m) == {"set_rps", "get_rps"} and m["set_rps"] > 1000
    with pytest.raises(parse.ParseError):
        parse.redis_benchmark("Could not connect to Redis at 10.0.0.1:6379: Connection refused\n")


def test_wrk_rate_and_latency_units():
    m = parse.wrk(sample("wrk.txt"))
    assert m["requests_per_s"] > 1000
    assert m["p50_us"] == pytest.approx(128.0) and m["p99_us"] == pytest.approx(1180.0)  # "1.18ms"
    with pytest.raises(parse.ParseError, match="Socket errors"):
        parse.wrk(sample("wrk.txt") + "  Socket errors: connect 0, read 3, write 0, timeout 0\n")


def test_loadgen_json_line():
    assert parse.loadgen('ready\n{"bytes": 10, "seconds": 1.0, "gbit_per_s": 8e-08}\n')["bytes"] == 10
    with pytest.raises(parse.ParseError):
        parse.loadgen("connect: Connection refused")


def test_summary_of_known_values():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median, s.min, s.max, s.p25, s.p75) == (5, 3.0, 1.0, 5.0, 2.0, 4.0)
    assert s.spread_pct == pytest.approx(100 * 2 / 3)
    one = summarize([7.0, float("nan")])
    assert one.n == 1 and one.median == 7.0
    with pytest.raises(ValueError):
        summarize([])


@given(st.lists(st.floats(0.001, 1e9), min_size=1, max_size=30))
def test_summary_orders_its_statistics(values):
    s = summarize(values)
    assert s.min <= s.p25 <= s.median <= s.p75 <= s.max


def test_ratio():
    assert ratio(summarize([2.0]), summarize([1.0])) == 2.0
    assert ratio(None, summarize([1.0])) is None
    assert ratio(summarize([1.0]), summarize([0.0])) is None


def _raw():
    def m(workload, mode, metrics, rep, error=None):
        row = {"workload": workload, "mode": mode, "metrics": metrics, "repeat": rep, "redirected_bytes": 1 if mode == "accel" else 0}
        if error:
            row["error"] = error
        return row

    rows = []
    for rep in range(3):
        rows += [
            m("pods/iperf3/stream 64 B x1", "plain", {"gbit_per_s": 0.2}, rep),
            m("pods/iperf3/stream 64 B x1", "accel", {"gbit_per_s": 0.1}, rep),
            m("pods/iperf3/stream 64 B x1", "unix", {"gbit_per_s": 0.3}, rep),
            m("pods/iperf3/stream 1 MiB x1", "plain", {"gbit_per_s": 10.0}, rep),
            m("pods/iperf3/stream 1 MiB x1", "accel", {"gbit_per_s": 30.0}, rep),
            m("pods/latency/ping-pong 64 B", "plain", {"p50_us": 100.0, "p99_us": 200.0, "p999_us": 900.0}, rep),
            m("pods/latency/ping-pong 64 B", "accel", {"p50_us": 80.0, "p99_us": 300.0, "p999_us": 800.0}, rep),
            m("pods/redis/redis GET/SET -P 1", "plain", {"set_rps": 50000.0, "get_rps": 50000.0}, rep),
            m("pods/redis/redis GET/SET -P 1", "accel", {}, rep, error="accelerated mode redirected nothing"),
            m("pods/connrate/connect+64 B req/resp+close", "plain", {"per_s": 2000.0 + rep}, rep),
            m("pods/connrate/connect+64 B req/resp+close", "accel", {"per_s": 1900.0 + rep}, rep),
        ]
    workloads = [
        {"key": "pods/iperf3/stream 64 B x1", "metric": "gbit_per_s", "unit": "Gbit/s", "higher_is_better": True, "modes": ["plain", "accel", "unix"]},
        {"key": "pods/iperf3/stream 1 MiB x1", "metric": "gbit_per_s", "unit": "Gbit/s", "higher_is_better": True, "modes": ["plain", "accel"]},
        {"key": "pods/latency/ping-pong 64 B", "metric": "p50_us", "unit": "us", "higher_is_better": False, "modes": ["plain", "accel"]},
        {"key": "pods/redis/redis GET/SET -P 1", "metric": "ops_per_s", "unit": "ops/s", "higher_is_better": True, "modes": ["plain", "accel"]},
        {"key": "pods/connrate/connect+64 B req/resp+close", "metric": "per_s", "unit": "conn/s", "higher_is_better": True, "modes": ["plain", "accel"]},
    ]
    machine = {"cpu_model": "test cpu", "cores": 2, "memory_gib": 1, "kernel": "6.x", "accel_commit": "abc", "tools": {"iperf3": "3.12"}}
    return {
        "profile": "test",
        "repeats": 3,
        "seconds_per_measurement": 1,
        "placement": "pinned",
        "duration_s": 10,
        "machine": machine,
        "topologies": {"pods": "two pods"},
        "workloads": workloads,
        "measurements": rows,
    }


def test_verdicts_mark_losses_in_both_directions():
    rows = {r["workload"]: r for r in report.verdicts(_raw())}
    assert rows["stream 64 B x1"]["slower"] and rows["stream 64 B x1"]["ratio"] == pytest.approx(0.5)
    assert not rows["stream 1 MiB x1"]["slower"] and rows["stream 1 MiB x1"]["ratio"] == pytest.approx(3.0)
    assert not rows["ping-pong 64 B p50"]["slower"]  # 80 us < 100 us
    assert rows["ping-pong 64 B p99"]["slower"]  # 300 us > 200 us: a loss although the ratio is above 1
    assert rows["redis GET/SET -P 1 SET"]["ratio"] is None and rows["redis GET/SET -P 1 SET"]["failed"]["accel"]


def test_markdown_report(tmp_path):
    raw = _raw()
    md = report.markdown(raw, [str(tmp_path / "x.png")])
    assert "| stream 64 B x1 | Gbit/s | 0.20 ±0% | 0.10 ±0% | 0.30 ±0% | **0.50x SLOWER** |" in md
    assert "| stream 1 MiB x1 | Gbit/s | 10.0 ±0% | 30.0 ±0% |  | 3.00x |" in md
    assert "FAILED (3x, see below)" in md and "[accel]: accelerated mode redirected nothing" in md
    assert "pods, stream 64 B x1: 0.50x of plain TCP" in md
    assert "![x.png](x.png)" in md


def test_program_cost_table_is_the_median_per_workload():
    raw = _raw()
    assert report.program_cost_table(raw) == [], "no table when the run did not measure it"
    costs = iter([30.0, 90.0, 40.0])
    for m in raw["measurements"]:
        if m["mode"] == "accel" and m["workload"] == "pods/iperf3/stream 64 B x1":
            m["program_cost"] = {"accel_redir": {"runs": 1000, "ns_per_run": next(costs)}, "accel_sockops": {"runs": 4, "ns_per_run": 500.0}}
    table = report.program_cost_table(raw)
    assert "| workload | accel_redir ns/run | accel_sockops ns/run |" in table
    assert "| pods/iperf3/stream 64 B x1 | 40 | 500 |" in table
    assert "What the programs cost" in report.markdown(raw, [])


def test_plots_are_written(tmp_path):
    made = report.plots(_raw(), str(tmp_path))
    names = sorted(os.path.basename(p) for p in made)
    assert names == ["latency_pods.png", "speedups.png", "throughput_pods.png"]
    for p in made:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_profiles_measure_each_mode_in_the_same_run():
    full = PROFILES["full"]()
    assert full.repeats >= 5
    kinds = {w.name for w in full.workloads}
    assert kinds == {"iperf3", "latency", "connrate", "redis", "nginx"}
    assert {w.topology for w in full.workloads} == {"loopback", "pods", "sidecar"}
    for w in full.workloads:
        assert {"plain", "accel"} <= set(w.modes)
    sizes = {w.params["size"] for w in full.workloads if w.name == "iperf3" and w.topology == "pods"}
    assert sizes == {64, 256, 1024, 4096, 16384, 65536, 131072, 1 << 20}
    assert {w.params["streams"] for w in full.workloads if w.name == "iperf3"} == {1, 4}
    assert not math.isnan(len(PROFILES["quick"]().workloads))


def test_a_cell_that_wins_by_the_median_shows_its_losing_repeats_and_its_split():
    """The bulk cell the old report showed as a clear win: most repeats win,
    some lose badly. The report names the worst repeat, counts the losses
    and flags the two groups."""
    raw = _raw()
    key = "pods/iperf3/stream 128 KiB x1"
    raw["workloads"].append({"key": key, "metric": "gbit_per_s", "unit": "Gbit/s", "higher_is_better": True, "modes": ["plain", "accel"]})
    for rep, a in enumerate([28.0, 27.0, 26.5, 26.0, 9.7, 7.6, 6.0]):
        raw["measurements"] += [
            {"workload": key, "mode": "plain", "metrics": {"gbit_per_s": 10.0}, "repeat": rep},
            {"workload": key, "mode": "accel", "metrics": {"gbit_per_s": a}, "repeat": rep},
        ]
    row = {r["workload"]: r for r in report.verdicts(raw)}["stream 128 KiB x1"]
    assert not row["slower"] and row["ratio"] == pytest.approx(2.6)
    assert row["repeats_lost"] == 3 and row["worst"] == pytest.approx(0.6)
    low, high = row["split"]
    assert low == pytest.approx([0.6, 0.76, 0.97]) and high == pytest.approx([2.6, 2.65, 2.7, 2.8])
    md = report.markdown(raw, [])
    assert "| stream 128 KiB x1 | Gbit/s | 10.0 ±0% | 26.0 ±" in md
    assert "| 2.60x | 0.60x | 3/7 SPLIT 0.60-0.97x / 2.60-2.80x |" in md
    assert "pods, stream 128 KiB x1: lost 3/7" in md
    # A cell that never lost says so; the latency cell's lower-is-better
    # direction counts a higher accel p99 as a lost repeat.
    rows = {r["workload"]: r for r in report.verdicts(raw)}
    assert rows["stream 1 MiB x1"]["repeats_lost"] == 0 and rows["stream 1 MiB x1"]["worst"] == pytest.approx(3.0)
    assert rows["ping-pong 64 B p99"]["repeats_lost"] == 3 and rows["ping-pong 64 B p99"]["worst"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "values, groups",
    [
        ([0.6, 0.62, 0.76, 0.97, 2.61, 2.65, 2.8], 4),  # two groups: low has 4
        ([2.0, 2.1, 2.2, 2.3, 2.4], None),  # a spread, not a split
        ([2.6, 2.7, 2.8, 2.65, 0.6], None),  # one outlier: the worst repeat shows it
        ([1.0, 1.05, 1.2, 1.25], None),  # a gap under 20%: noise
        ([1.0, 1.1], None),  # too few repeats to say
    ],
)
def test_split_finds_two_groups_only_when_they_are_apart(values, groups):
    got = split(values)
    if groups is None:
        assert got is None
    else:
        assert got is not None and len(got[0]) == groups and sorted(got[0] + got[1]) == sorted(values)


def test_long_profile_runs_the_bulk_cells_for_ten_seconds():
    long = PROFILES["long"]()
    assert long.settings.seconds >= 10 and long.repeats >= 5
    assert {w.params["size"] for w in long.workloads} == {128 << 10, 1 << 20}
    assert {w.topology for w in long.workloads} == {"loopback", "pods"}


def test_the_report_names_the_repeats_in_which_a_sender_waited():
    raw = _raw()
    for m in raw["measurements"]:
        if m["workload"] == "pods/iperf3/stream 1 MiB x1" and m["mode"] == "accel" and m["repeat"] == 1:
            m["waits"], m["wait_ms"] = 3, 612.4
    md = report.markdown(raw, [])
    assert "## Accelerated repeats in which a sender waited on TCP" in md
    assert "- pods/iperf3/stream 1 MiB x1: 1 of 3 repeats waited; waits (time waited) per such repeat: 3 (612 ms)" in md
    assert "64 B x1: " not in md.split("waited on TCP", 1)[1].split("##", 1)[0], "a cell without waits is not listed"
    del raw["measurements"][0]  # old raw files have no "waits": nothing listed, no error
    for m in raw["measurements"]:
        m.pop("waits", None)
    assert "waited on TCP" not in report.markdown(raw, [])


def _crossover_raw(ratios: dict[tuple[str, int, int], float]) -> dict:
    """A crossover run's raw results: for each (topology, size, streams), three
    repeats of plain at 1.0 Gbit/s and accelerated at the given ratio."""
    rows = []
    for (topo, size, streams), r in ratios.items():
        for rep in range(3):
            key = f"{topo}/iperf3/stream {human_size(size)} x{streams}"
            rows.append({"workload": key, "mode": "plain", "repeat": rep, "metrics": {"gbit_per_s": 1.0}})
            rows.append({"workload": key, "mode": "accel", "repeat": rep, "metrics": {"gbit_per_s": r}})
    return {"measurements": rows}


def test_crossover_limit_is_where_every_larger_size_wins():
    sizes = (256, 4096, 16384, 65536)
    one = {256: 0.5, 4096: 0.6, 16384: 1.2, 65536: 1.5}
    four = {256: 0.8, 4096: 1.4, 16384: 0.9, 65536: 1.3}
    ratios = {("loopback", s, 1): one[s] for s in sizes} | {("loopback", s, 4): four[s] for s in sizes}
    # Between pods everything wins but 4 KiB with one stream.
    ratios |= {("pods", s, n): 1.5 for s in sizes for n in (1, 4)} | {("pods", 4096, 1): 0.5}
    found = {p.topology: p for p in crossover.limits(_crossover_raw(ratios), sizes)}
    # loopback: 4 KiB's geometric mean sqrt(0.6*1.4) = 0.92 loses, 16 KiB's
    # sqrt(1.2*0.9) = 1.04 wins, and so does 64 KiB.
    assert found["loopback"].limit == 16384
    assert [v.wins for v in found["loopback"].sizes] == [False, False, True, True]
    assert math.isclose(found["loopback"].sizes[1].score or 0, math.sqrt(0.6 * 1.4))
    # pods: 4 KiB sqrt(0.5*1.5) = 0.87 loses, so 256 B below it does not count.
    assert found["pods"].limit == 16384
    text = crossover.render(list(found.values()))
    assert "accel run --small-write-local=16384 --small-write-remote=16384" in text


def test_crossover_when_nothing_or_everything_wins():
    sizes = (1024, 4096)
    ratios = {("loopback", s, n): 0.7 for s in sizes for n in (1, 4)} | {("pods", s, n): 1.2 for s in sizes for n in (1, 4)}
    found = {p.topology: p for p in crossover.limits(_crossover_raw(ratios), sizes)}
    assert found["loopback"].limit == 8192 and "no measured size" in found["loopback"].note
    assert found["pods"].limit == 1024 and "every measured size won" in found["pods"].note
    # A path that was not measured gets no limit (no option to print for it).
    only_pods = {k: v for k, v in ratios.items() if k[0] == "pods"}
    assert [p.topology for p in crossover.limits(_crossover_raw(only_pods), sizes)] == ["pods"]


def _noise_raw(cells: dict[str, tuple[str, list[float]]]) -> dict:
    """A noise run's raw results: per workload key, its metric and the
    again/plain ratio of each repeat (plain at 100 of that unit)."""
    rows, workloads = [], []
    for key, (metric, ratios) in cells.items():
        higher = metric != "p50_us"
        workloads.append({"key": key, "metric": metric, "unit": "", "higher_is_better": higher, "modes": ["plain", noise.AGAIN]})
        for rep, r in enumerate(ratios):
            rows.append({"workload": key, "mode": "plain", "repeat": rep, "metrics": {metric: 100.0}})
            rows.append({"workload": key, "mode": noise.AGAIN, "repeat": rep, "metrics": {metric: 100.0 * r}})
    return {"workloads": workloads, "measurements": rows}


def test_noise_counts_the_cells_that_miss_the_bar_by_chance():
    raw = _noise_raw(
        {
            "loopback/iperf3/stream 4 KiB x1": ("gbit_per_s", [0.90, 0.93, 1.10]),  # median 0.93: misses
            "loopback/iperf3/stream 4 KiB x4": ("gbit_per_s", [1.08, 1.07, 1.00]),  # 1.07: outside, wins
            "pods/latency/ping-pong 64 B": ("p50_us", [1.06, 1.10, 0.90]),  # p50 1.06 slower: misses
            "pods/connrate/connect+64 B req/resp+close": ("per_s", [0.97, 1.02, 1.0]),  # within
        }
    )
    found = {c.cell: c for c in noise.cells(raw)}
    assert math.isclose(found["loopback/stream 4 KiB x1"].ratio, 0.93)
    assert found["loopback/stream 4 KiB x1"].misses_bar and found["loopback/stream 4 KiB x1"].worst == 0.90
    assert not found["loopback/stream 4 KiB x4"].misses_bar and found["loopback/stream 4 KiB x4"].outside_band
    p50 = found["pods/ping-pong 64 B p50"]
    assert p50.misses_bar and p50.worst == 1.10  # for latency the worst pair is the slowest
    assert not found["pods/connect+64 B req/resp+close"].outside_band
    s = noise.summary(list(found.values()))
    assert (s["cells"], s["missing_bar"], s["outside_band"]) == (4, 2, 3)
    assert (s["worst_pair"], s["worst_p50_pair"]) == (0.9, 1.1)
    assert "2 of 4 cells miss the bar" in noise.render(list(found.values()))


def test_noise_profile_measures_every_cell_with_plain_tcp_twice():
    prof = noise.profile("full")
    assert prof.name == "noise-full" and {w.modes for w in prof.workloads} == {("plain", noise.AGAIN)}
    assert [w.key for w in prof.workloads] == [w.key for w in PROFILES["full"]().workloads]


def _accel_raw(cells: dict[str, tuple[str, float]]) -> dict:
    """A benchmark run's raw results: per workload key, its metric and the
    accel/plain ratio of all three repeats."""
    rows, workloads = [], []
    for key, (metric, r) in cells.items():
        workloads.append({"key": key, "metric": metric, "unit": "", "higher_is_better": metric != "p50_us", "modes": ["plain", "accel"]})
        for rep in range(3):
            rows.append({"workload": key, "mode": "plain", "repeat": rep, "metrics": {metric: 100.0}})
            rows.append({"workload": key, "mode": "accel", "repeat": rep, "metrics": {metric: 100.0 * r}})
    return {"workloads": workloads, "measurements": rows}


def test_noise_judges_a_loss_against_the_cells_own_noise():
    noisy = noise.cells(
        _noise_raw(
            {
                "loopback/iperf3/stream 4 KiB x1": ("gbit_per_s", [0.85, 0.85, 0.85]),  # this cell's noise: 15%
                "pods/iperf3/stream 256 B x1": ("gbit_per_s", [1.0, 1.0, 1.0]),  # none: the bar (5%) decides
                "pods/latency/ping-pong 64 B": ("p50_us", [1.0, 1.0, 1.0]),
            }
        )
    )
    run1 = _accel_raw(
        {
            "loopback/iperf3/stream 4 KiB x1": ("gbit_per_s", 0.90),  # lost, but within its noise
            "pods/iperf3/stream 256 B x1": ("gbit_per_s", 0.60),  # lost beyond it
            "pods/latency/ping-pong 64 B": ("p50_us", 1.10),  # slower beyond the bar
            "pods/iperf3/stream 1 MiB x1": ("gbit_per_s", 2.0),  # won: not judged
        }
    )
    run2 = _accel_raw(
        {
            "loopback/iperf3/stream 4 KiB x1": ("gbit_per_s", 0.70),
            "pods/iperf3/stream 256 B x1": ("gbit_per_s", 0.50),
            "pods/latency/ping-pong 64 B": ("p50_us", 1.02),  # within the bar in this run
            "pods/iperf3/stream 1 MiB x1": ("gbit_per_s", 0.90),  # no noise measured for it: the bar decides
        }
    )
    judged = {j.cell: j for j in noise.judge([run1, run2], noisy)}
    assert set(judged) == {"loopback/stream 4 KiB x1", "pods/stream 256 B x1", "pods/ping-pong 64 B p50", "pods/stream 1 MiB x1"}
    lo = judged["loopback/stream 4 KiB x1"]
    assert math.isclose(lo.threshold, 0.15) and lo.beyond == [False, True] and lo.verdict == "beyond noise in some runs"
    assert judged["pods/stream 256 B x1"].verdict == "loses beyond noise in every run"
    assert judged["pods/ping-pong 64 B p50"].beyond == [True, False]
    big = judged["pods/stream 1 MiB x1"]
    assert big.noise is None and big.beyond == [False, True]
    text = noise.render_judged(list(judged.values()), 2)
    assert "1 of 4 cells that lost in a run lost beyond their noise in every run: pods/stream 256 B x1." in text


@pytest.mark.parametrize("extra", [["--seconds", "3"], ["--only", "pods"], ["--profile", "tiny"], ["--no-pin"]])
def test_noise_from_refuses_options_that_only_shape_a_measurement(tmp_path, extra):
    """--noise-from measures nothing: an option that would have shaped the
    measurement is refused by name, not silently ignored."""
    res = subprocess.run([sys.executable, "-m", "benchmarks.noise", "--noise-from", str(tmp_path), *extra], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert extra[0].lstrip("-").replace("no-", "") in res.stderr and "measures nothing" in res.stderr
    assert "Traceback" not in res.stderr
