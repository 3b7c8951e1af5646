"""Pure helpers of the benchmarks: percentiles, options, result output, synthetic traffic."""

from __future__ import annotations

import json

import pytest

from healthbus.bench import BenchOptions, Goal, SuiteResult, percentile, summarize_ms
from healthbus.bench._workload import CYCLE, bench_config_text, probe_ids, probe_messages, target_names
from healthbus.protocol import decode_probe_result, load_config_text


def test_percentile_interpolates_between_ranks() -> None:
    """p50 of an even count is the midpoint; p0 and p100 are the extremes."""
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1.0, 100.5])
def test_percentile_rejects_bad_rank(q: float) -> None:
    """A rank outside 0-100 is a bug in the caller, not a number."""
    with pytest.raises(ValueError, match="0-100"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    """An empty sample set raises instead of printing a made-up figure."""
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


def test_summarize_ms_converts_nanoseconds() -> None:
    """Nanosecond samples come back as p50/p99/max milliseconds."""
    stats = summarize_ms([1_000_000, 2_000_000, 3_000_000])
    assert stats == {"p50_ms": 2.0, "p99_ms": 2.98, "max_ms": 3.0}


def test_options_pick_explicit_then_size() -> None:
    """An explicit option wins; otherwise the default for the size is used."""
    assert BenchOptions(size="smoke").pick("messages", smoke=10, full=20) == 10
    assert BenchOptions(size="full").pick("messages", smoke=10, full=20) == 20
    assert BenchOptions(size="smoke", messages=5).pick("messages", smoke=10, full=20) == 5


def test_result_json_has_data_goals_and_machine() -> None:
    """The JSON line holds the data keys at top level, then goals and machine."""
    result = SuiteResult(
        "coordinator", "smoke", {"ratio": 0.7, "messages": 10}, [Goal("ratio >= 0.5", True, "0.7")], ["n"], {"nproc": 2}
    )
    line = result.json_line()
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["suite"] == "coordinator"
    assert obj["ratio"] == 0.7
    assert obj["goals"] == [{"goal": "ratio >= 0.5", "met": True, "detail": "0.7"}]
    assert obj["machine"] == {"nproc": 2}
    assert "[MET ] ratio >= 0.5" in result.table()


def test_probe_messages_are_valid_and_deterministic() -> None:
    """The message set decodes, has the requested size and is the same for the same seed."""
    targets, probes = target_names(4), probe_ids(3)
    total = len(CYCLE) * len(targets) * len(probes)  # one whole cycle for every target
    first = probe_messages(targets, probes, total, seed=3)
    second = probe_messages(targets, probes, total, seed=3)
    assert len(first) == total
    assert [(t, p) for t, p, _ in first] == [(t, p) for t, p, _ in second]
    outcomes = set()
    for target, probe, data in first:
        result = decode_probe_result(data, subject_target=target)
        assert result.probe == probe
        outcomes.add(result.outcome)
    assert outcomes == {"pass", "warn", "fail"}


def test_bench_config_is_a_valid_healthbus_config() -> None:
    """The generated configuration loads and carries the requested settings."""
    text = bench_config_text(target_names(3), prefix="b1", failure_threshold=1, quorum="any", flap=False)
    config = load_config_text(text, source="<test>")
    assert [t.name for t in config.targets] == target_names(3)
    assert config.bus.prefix == "b1"
    assert config.targets[0].failure_threshold == 1
    assert config.targets[0].quorum == "any"
    assert config.targets[0].flap.enabled is False
