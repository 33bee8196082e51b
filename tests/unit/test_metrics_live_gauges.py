"""A worker's live gauges (open connections) stop counting when it exits; its counters stay."""

from __future__ import annotations

from pathlib import Path

from surat import metrics


def test_a_dead_workers_live_gauge_file_goes_and_its_counters_stay(tmp_path: Path) -> None:
    for name in ("gauge_livesum_4242.db", "gauge_livesum_4343.db", "counter_4242.db"):
        (tmp_path / name).write_bytes(b"")
    metrics.worker_exited(4242, str(tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_4242.db", "gauge_livesum_4343.db"]
    metrics.worker_exited(4343, None)  # not in multiprocess mode: nothing to do
    assert (tmp_path / "gauge_livesum_4343.db").exists()
