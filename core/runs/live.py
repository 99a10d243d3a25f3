"""A live registry: what a UI polls while driver threads change it.

RunManager (training runs), core.studies.comparisons and core.studies.map_jobs each keep one. An id maps
to an immutable snapshot (a frozen dataclass with an `active` property), to a handle for whatever drives it
(its worker, device turn, stop event: an `Entry`) and to its driver thread. A change replaces the snapshot
under the registry's one lock (dataclasses.replace), so a reader gets a whole snapshot without holding
anything, never a half-made one; every change wakes the threads that wait on the registry.

The registry never calls out while it holds its lock, so callers may take it inside their own locks.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Generic, TypeVar

S = TypeVar("S")  # a frozen dataclass with an `active` property
E = TypeVar("E", bound="Entry")
DRIVER_CHECK_S = 0.5  # how often a waiter also checks that the driver thread is alive (its end notifies nobody)


class Entry:
    """A handle on one entry of a registry: its current snapshot, and update() for its driver."""

    def __init__(self, registry: LiveRegistry, key: str):
        self.registry = registry
        self.key = key

    @property
    def snapshot(self):
        return self.registry.get(self.key)

    def update(self, **changes):
        return self.registry.update(self.key, **changes)


class LiveRegistry(Generic[S, E]):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._snapshots: dict[str, S] = {}
        self._entries: dict[str, E] = {}
        self._threads: dict[str, threading.Thread] = {}

    def add(self, entry: E, snapshot: S) -> E:
        """Register (or replace) an entry with its first snapshot; returns the entry."""
        with self._changed:
            self._snapshots[entry.key] = snapshot
            self._entries[entry.key] = entry
            self._changed.notify_all()
        return entry

    def __contains__(self, key: str) -> bool:
        with self._changed:
            return key in self._snapshots

    def get(self, key: str) -> S | None:
        with self._changed:
            return self._snapshots.get(key)

    def entry(self, key: str) -> E | None:
        with self._changed:
            return self._entries.get(key)

    def entries(self) -> list[E]:
        with self._changed:
            return list(self._entries.values())

    def update(self, key: str, **changes) -> S:
        """Replace the entry's snapshot by a copy with `changes`; returns the new snapshot."""
        with self._changed:
            snapshot = dataclasses.replace(self._snapshots[key], **changes)
            self._snapshots[key] = snapshot
            self._changed.notify_all()
        return snapshot

    def active(self) -> list[S]:
        """The snapshots of the entries that have not ended, in the order they were added."""
        with self._changed:
            return [s for s in self._snapshots.values() if s.active]

    def is_active(self, key: str) -> bool:
        snapshot = self.get(key)
        return snapshot is not None and snapshot.active

    def drive(self, key: str, target, *args, name: str) -> threading.Thread:
        """Start the entry's driver thread (a daemon: the owner's shutdown() ends it in order)."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._changed:
            self._threads[key] = thread
        thread.start()
        return thread

    def thread(self, key: str) -> threading.Thread | None:
        with self._changed:
            return self._threads.get(key)

    def driving(self, key: str) -> bool:
        """Whether the entry's driver thread is still running."""
        thread = self.thread(key)
        return thread is not None and thread.is_alive()

    def forget_thread(self, key: str) -> None:
        """The entry has no driver (it failed before one started)."""
        with self._changed:
            self._threads.pop(key, None)

    def wait(self, key: str, timeout: float | None = None) -> S | None:
        """Until the entry has ended and its driver thread has finished (its last bookkeeping done), or `timeout`
        seconds; returns its snapshot then (None for an unknown id)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def ended() -> bool:  # a driver that died without saying so has ended too
            snapshot, thread = self._snapshots.get(key), self._threads.get(key)
            return snapshot is None or not snapshot.active or (thread is not None and not thread.is_alive())

        with self._changed:
            while not ended():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(DRIVER_CHECK_S if left is None else min(left, DRIVER_CHECK_S))
            thread = self._threads.get(key)
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.get(key)

    def wait_until(self, key: str, ready, timeout: float) -> S | None:
        """The entry's snapshot once ready(snapshot) is true or it has ended, or after `timeout` seconds, whichever
        comes first (None for an unknown id). A page that expects a change soon waits here instead of polling."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                snapshot = self._snapshots.get(key)
                left = deadline - time.monotonic()
                if snapshot is None or not snapshot.active or ready(snapshot) or left <= 0:
                    return snapshot
                self._changed.wait(left)

    def join_all(self, timeout: float) -> None:
        """Wait up to `timeout` seconds in all for every driver thread to finish."""
        deadline = time.monotonic() + timeout
        with self._changed:
            threads = list(self._threads.values())
        for thread in threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.1, deadline - time.monotonic()))
