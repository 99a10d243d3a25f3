"""What a SIGKILLed worker's message says about the out-of-memory killer (core.engine.memory.oom_verdict), with the
kernel's OOM-kill counter and the memory limit faked, and the manager's death message built from it."""
from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from core.engine import memory
from core.runs.manager import RunManager

GIB = 2**30


@pytest.fixture
def machine(monkeypatch):
    """The OOM-kill counter and memory limit oom_verdict reads, set by the test."""
    fake = SimpleNamespace(kills=3, limit=8 * GIB)
    monkeypatch.setattr(memory, "oom_kills", lambda: fake.kills)
    monkeypatch.setattr(memory, "memory_limit", lambda: fake.limit)
    return fake


def test_a_kill_counted_meanwhile_names_the_oom_killer(machine):
    machine.kills = 4  # one more than when the run started
    verdict = memory.oom_verdict(int(1.5 * GIB), kills_before=3)
    assert verdict == "the kernel's out-of-memory killer ended a process meanwhile; it was using 1.5 GiB of 8.0 GiB"


def test_a_process_near_the_limit_is_a_likely_oom_victim_even_without_a_counted_kill(machine):
    verdict = memory.oom_verdict(int(7 * GIB), kills_before=3)  # 7 of 8 GiB: over 80 %
    assert verdict == "it was using 7.0 GiB of 8.0 GiB, so the out-of-memory killer is the likely cause"


@pytest.mark.parametrize("kills_before, rss", [(3, 1 * GIB), (None, 1 * GIB), (3, None)])
def test_no_new_kill_and_little_memory_is_not_the_oom_killer(machine, kills_before, rss):
    verdict = memory.oom_verdict(rss, kills_before=kills_before)
    assert "not for lack of memory" in verdict and "likely cause" not in verdict and "killer ended" not in verdict
    assert verdict.startswith("it was using 1.0 GiB of 8.0 GiB" if rss else "it was using an unknown amount of "
                                                                            "memory (limit 8.0 GiB)")


def test_unknown_counter_and_limit_say_only_what_is_known(machine):
    machine.kills, machine.limit = None, None
    assert memory.oom_verdict(2 * GIB, kills_before=None) == (
        "it was using 2.0 GiB, so not for lack of memory as far as can be told")


def dead_worker(code: int):
    return SimpleNamespace(process=SimpleNamespace(wait=lambda timeout=None: code), exitcode=code)


@pytest.mark.parametrize("kills_now, says, not_says", [
    (5, "(the kernel's out-of-memory killer ended a process meanwhile", "not for lack of memory"),
    (3, "(it was using 0.5 GiB of 8.0 GiB, so not for lack of memory", "out-of-memory killer"),
])
def test_the_managers_death_message_carries_the_verdict(machine, kills_now, says, not_says):
    machine.kills = kills_now
    message = RunManager._death_message(dead_worker(-signal.SIGKILL), {"rss": GIB // 2, "kills_before": 3})
    assert message.startswith("the training process was killed by SIGKILL ") and says in message, message
    assert not_says not in message, message


def test_other_deaths_say_nothing_about_memory(machine):
    machine.kills = 9
    assert RunManager._death_message(dead_worker(-signal.SIGTERM), {"rss": GIB, "kills_before": 3}) == (
        "the training process was killed by SIGTERM")
    assert RunManager._death_message(dead_worker(1), {"rss": GIB, "kills_before": 3}) == (
        "the training process exited unexpectedly with code 1")
