"""One figure cache for the live panel, the Compare tab and the speedup map (dashboard/figure_cache.py): figures are
rebuilt at once for another run, and for new epochs no more often than the hold allows."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from dashboard import figure_cache


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(t=100.0)
    monkeypatch.setattr(figure_cache, "st", SimpleNamespace(session_state={}))
    monkeypatch.setattr(figure_cache, "time", SimpleNamespace(monotonic=lambda: now.t))
    return now


def test_rebuilds_on_change_and_holds_new_progress(clock):
    builds = []

    def figures(identity, progress, hold_s=0.0):
        return figure_cache.cached_figures("slot", identity, progress, lambda: builds.append(progress) or progress,
                                           hold_s=hold_s)

    assert figures("run1", 1, hold_s=2.0) == 1
    assert figures("run1", 1, hold_s=2.0) == 1 and builds == [1]  # unchanged: kept
    clock.t += 1.0
    assert figures("run1", 2, hold_s=2.0) == 1  # new epoch within the hold: the kept figure
    clock.t += 1.0
    assert figures("run1", 2, hold_s=2.0) == 2  # the hold has passed
    assert figures("run1", 3) == 3  # no hold (the run rests): at once
    assert figures("run2", 3, hold_s=2.0) == 3 and builds == [1, 2, 3, 3]  # another run: at once, whatever the hold
