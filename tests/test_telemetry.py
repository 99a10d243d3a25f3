"""Telemetry (core.runs.telemetry): samples of a real process through psutil, NVML through fakes (absent, failing,
answering), the summary's figures, and what a run records of them in the store and the history rows."""
from __future__ import annotations

import socket
import threading
import time
from multiprocessing.connection import Connection
from types import SimpleNamespace

import psutil
import pytest
import torch

from core.config import Phase, RunConfig
from core.runs import telemetry
from core.runs.history import runs_table, summarize_run
from core.runs.store import Store, StoreError
from core.runs.telemetry import (CPU_RUN_NOTE, NO_GPU, GpuProbe, ProcessProbe, TelemetrySample, TelemetrySampler,
                                 TelemetrySummary)
from core.runs.training_run import TrainingRun
from history_helpers import EMPTY_DATA_DIR

CONFIG = RunConfig(hidden_sizes=(32,), batch_size=100, epochs=2, device="cpu")


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


# -- a real process through psutil ---------------------------------------------------------------------------
def test_a_sample_of_this_process_reads_its_memory_its_cpu_and_every_core():
    probe = ProcessProbe()
    busy(0.3)
    sample = probe.sample()
    rss_now = psutil.Process().memory_info().rss
    assert 0.5 * rss_now < sample.rss_bytes < 2 * rss_now
    assert sample.process_cpu_percent > 20  # 0.3 s of one core in ~0.3-0.6 s of wall time on a shared machine
    assert len(sample.cpu_percent) == psutil.cpu_count()
    assert all(0 <= p <= 100 for p in sample.cpu_percent)
    assert sample.seconds >= 0.3 and abs(sample.at - time.time()) < 5
    assert (sample.gpu_percent, sample.gpu_memory_used, sample.gpu_note) == (None, None, CPU_RUN_NOTE)


def test_a_span_of_a_few_milliseconds_still_reads_its_cpu_use():
    """A tiny run's phase lasts a few ms: clock-tick CPU counters (10 ms) would read 0 % for it (CI saw that)."""
    probe = ProcessProbe()
    busy(0.004)
    sample = probe.sample()
    assert sample.process_cpu_percent > 20 and sample.seconds < 1


def test_a_sample_of_a_process_that_ended_has_no_process_figures_and_no_error():
    child = psutil.Popen(["sleep", "10"])
    probe = ProcessProbe(child.pid)
    child.kill()
    child.wait()
    sample = probe.sample()
    assert sample.rss_bytes is None and sample.process_cpu_percent is None
    assert len(sample.cpu_percent) == psutil.cpu_count()


# -- NVML: absent, failing, answering (fakes) ------------------------------------------------------------------
class FakeNVMLError(Exception):
    pass


class FakeNVML:
    """The parts of pynvml the probe uses."""

    def __init__(self, fail_init: str = "", fail_read: bool = False):
        self.fail_init, self.fail_read = fail_init, fail_read
        self.asked: list = []
        self.shut = 0

    def nvmlInit(self):
        if self.fail_init:
            raise FakeNVMLError(self.fail_init)

    def nvmlShutdown(self):
        self.shut += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        self.asked.append(("index", index))
        return f"gpu{index}"

    def nvmlDeviceGetHandleByPciBusId(self, address):
        self.asked.append(("pci", address))
        return f"gpu@{address}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        if self.fail_read:
            raise FakeNVMLError("GPU is lost")
        return SimpleNamespace(gpu=63, memory=20)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)


def test_without_pynvml_the_probe_says_so_quietly(monkeypatch):
    def missing():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(telemetry, "_import_nvml", missing)
    probe = GpuProbe(0)
    assert probe.read() is None
    assert probe.note == f"{NO_GPU}: nvidia-ml-py (pynvml) is not installed"
    sample = ProcessProbe(gpu=probe).sample()
    assert sample.gpu_percent is None and sample.gpu_note == probe.note


def test_a_driver_nvml_cannot_load_is_a_note_not_an_error():
    probe = GpuProbe(0, nvml=FakeNVML(fail_init="NVML Shared Library Not Found"))
    assert probe.read() is None
    assert probe.note == f"{NO_GPU}: NVML Shared Library Not Found"


def test_this_machines_nvml_either_answers_or_says_why_not():
    probe = GpuProbe(0)  # the real pynvml: without a driver (as on the 2-core test machines) a note
    figures = probe.read()
    try:
        if figures is None:
            assert probe.note.startswith(NO_GPU + ": ")
        else:
            percent, used, total = figures
            assert 0 <= percent <= 100 and 0 < used <= total
    finally:
        probe.close()


def test_an_answering_nvml_gives_the_gpus_figures_and_shuts_down_on_close():
    nvml = FakeNVML()
    probe = GpuProbe(0, nvml=nvml)
    sample = ProcessProbe(gpu=probe).sample()
    assert (sample.gpu_percent, sample.gpu_memory_used, sample.gpu_memory_total) == (63.0, 3 * 2**30, 80 * 2**30)
    assert sample.gpu_note == ""
    probe.close()
    probe.close()
    assert nvml.shut == 1


def test_nvml_failing_mid_run_ends_gpu_figures_with_a_note():
    nvml = FakeNVML()
    probe = GpuProbe(0, nvml=nvml)
    assert probe.read() is not None
    nvml.fail_read = True
    assert probe.read() is None
    assert probe.note == f"{NO_GPU}: NVML stopped answering: GPU is lost"
    assert nvml.shut == 1 and probe.read() is None


def test_torchs_cuda_index_is_found_in_nvml_by_its_pci_address(monkeypatch):
    # torch numbers only the visible GPUs (CUDA_VISIBLE_DEVICES=3 makes GPU 3 torch's cuda:0); NVML numbers them all
    props = SimpleNamespace(pci_domain_id=0, pci_bus_id=0x41, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    nvml = FakeNVML()
    GpuProbe(0, nvml=nvml)
    assert nvml.asked == [("pci", "0:41:0.0")]


def test_without_torchs_pci_address_the_index_is_used(monkeypatch):
    def no_cuda(index):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_cuda)
    nvml = FakeNVML()
    GpuProbe(1, nvml=nvml)
    assert nvml.asked == [("index", 1)]


# -- the summary ---------------------------------------------------------------------------------------------
def sample(seconds, rss=None, cpu=None, gpu=None) -> TelemetrySample:
    return TelemetrySample(0.0, seconds, rss, cpu, (), gpu)


def test_the_summary_keeps_the_peak_and_time_weighted_means():
    summary = TelemetrySummary()
    assert not summary.known and summary.mean_cpu_percent is None and summary.peak_rss_bytes is None
    summary.add(sample(1.0, rss=100, cpu=100.0))
    summary.add(sample(3.0, rss=300, cpu=20.0))
    summary.add(sample(0.5, rss=200, cpu=None))
    assert summary.known and summary.samples == 3
    assert summary.peak_rss_bytes == 300
    assert summary.mean_cpu_percent == pytest.approx((100 * 1 + 20 * 3) / 4)
    assert summary.mean_gpu_percent is None  # a CPU run: unknown, never 0
    summary.add(sample(2.0, gpu=50.0))
    assert summary.mean_gpu_percent == 50.0


def test_a_seeded_summary_weighs_the_stored_figures_by_their_seconds():
    summary = TelemetrySummary()
    summary.seed(500, 100.0, None, seconds=3.0)
    summary.add(sample(1.0, rss=400, cpu=20.0, gpu=80.0))
    assert summary.peak_rss_bytes == 500
    assert summary.mean_cpu_percent == pytest.approx((100 * 3 + 20) / 4)
    assert summary.mean_gpu_percent == 80.0
    empty = TelemetrySummary()
    empty.seed(None, None, None, seconds=0.0)
    assert not empty.known


# -- the sampler thread --------------------------------------------------------------------------------------
def test_the_sampler_samples_each_interval_and_once_more_when_stopped():
    got = []
    sampler = TelemetrySampler(interval_s=0.05, on_sample=got.append)
    sampler.start()
    busy(0.3)
    sampler.stop()
    assert len(got) >= 3 and sampler.summary.samples == len(got)
    assert sampler.last is got[-1]
    assert sampler.summary.peak_rss_bytes == max(s.rss_bytes for s in got)
    assert not any(t.name == "telemetry" for t in threading.enumerate())
    count = len(got)
    time.sleep(0.15)
    assert len(got) == count  # nothing after stop


def test_a_sampler_stopped_at_once_still_has_one_sample_and_a_failing_listener_is_ignored():
    def broken(sample):
        raise OSError("pipe closed")

    sampler = TelemetrySampler(interval_s=10, on_sample=broken)
    sampler.start()
    sampler.stop()
    assert sampler.summary.samples == 1 and sampler.summary.peak_rss_bytes > 0


def test_a_cuda_sampler_without_gpu_telemetry_still_samples_the_process(monkeypatch):
    monkeypatch.setattr(telemetry, "_import_nvml", lambda: FakeNVML(fail_init="Driver Not Loaded"))
    got = []
    sampler = TelemetrySampler("cuda", interval_s=10, on_sample=got.append)
    sampler.start()
    sampler.stop()
    assert got[0].gpu_note == f"{NO_GPU}: Driver Not Loaded" and got[0].rss_bytes > 0
    assert sampler.summary.mean_gpu_percent is None


def test_one_sample_costs_little_cpu():
    probe = ProcessProbe()
    started = time.process_time()
    for _ in range(50):
        probe.sample()
    per_sample = (time.process_time() - started) / 50
    assert per_sample < 0.005, per_sample  # measured ~0.2-0.4 ms on the 2-core test machine; at 1 Hz, < 0.1 % of a core


# -- what a run records --------------------------------------------------------------------------------------
def test_a_run_records_peak_memory_and_cpu_use_and_sends_its_samples(tmp_path, small_sample):
    store = Store(tmp_path / "runs.db")
    got = []
    run = TrainingRun(CONFIG, store=store, dataset=small_sample, on_telemetry=got.append)
    assert run.run_schedule([Phase(2, 0.5), Phase(1, 0.1)]) == "finished"
    assert len(got) >= 2  # at least the last sample of each phase
    assert all(s.gpu_note == CPU_RUN_NOTE for s in got)
    row = store.get_run(run.id)
    assert row["peak_rss_bytes"] == run.telemetry.peak_rss_bytes == max(s.rss_bytes for s in got)
    assert row["peak_rss_bytes"] > 50 * 2**20  # torch alone is more
    assert row["mean_cpu_percent"] == pytest.approx(run.telemetry.mean_cpu_percent)
    assert row["mean_cpu_percent"] > 0
    assert row["mean_gpu_percent"] is None
    summary = run.summary()
    assert summary["peak_rss_bytes"] == row["peak_rss_bytes"] and summary["mean_gpu_percent"] is None


def test_a_resumed_run_starts_from_its_stored_figures(tmp_path):
    store = Store(tmp_path / "runs.db")
    first = TrainingRun(CONFIG, store=store, data_dir=EMPTY_DATA_DIR)
    first.run_schedule([Phase(1, 0.5)])
    store.set_telemetry(first.id, 10 * 2**30, 150.0, None)  # as if it had peaked high before
    resumed = TrainingRun.resume(first.id, store, data_dir=EMPTY_DATA_DIR)
    assert resumed.telemetry.peak_rss_bytes == 10 * 2**30
    assert resumed.telemetry.mean_cpu_percent == pytest.approx(150.0)
    resumed.train_phase(1, 0.1)
    row = store.get_run(first.id)
    assert row["peak_rss_bytes"] == 10 * 2**30  # the stored peak stays the peak
    assert row["mean_cpu_percent"] != pytest.approx(150.0)  # the new phase's use is averaged in


def test_a_failing_telemetry_write_warns_like_any_store_failure_and_the_run_goes_on(tmp_path, small_sample,
                                                                                   monkeypatch):
    store = Store(tmp_path / "runs.db")
    failures = []

    def set_telemetry(*args):
        if not failures:
            failures.append(args)
            raise StoreError("cannot write to the run database: disk I/O error")
        return Store.set_telemetry(store, *args)

    monkeypatch.setattr(store, "set_telemetry", set_telemetry)
    run = TrainingRun(CONFIG, store=store, dataset=small_sample)
    assert run.train_phase(1, 0.5) == "finished"
    assert "NOT being saved" in run.store_warning and "disk I/O error" in run.store_warning
    assert store.get_run(run.id)["status"] == "finished"  # the status was written before the figures
    assert run.train_phase(1, 0.1) == "finished"  # the next phase's writes catch up
    assert run.store_warning == ""
    assert store.get_run(run.id)["peak_rss_bytes"] == run.telemetry.peak_rss_bytes


def test_history_rows_carry_the_figures_and_blanks_where_unknown(tmp_path, small_sample):
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(CONFIG, store=store, dataset=small_sample)
    run.train_phase(1, 0.5)
    old = store.create_run(CONFIG.to_dict(), device="cpu", data_source="", torch_version="", parameters=None)
    rows = {r["run_id"]: r for r in runs_table(store)}
    assert rows[run.id]["peak_rss_bytes"] == run.telemetry.peak_rss_bytes > 0
    assert rows[run.id]["mean_cpu_percent"] == pytest.approx(run.telemetry.mean_cpu_percent)
    assert rows[run.id]["mean_gpu_percent"] is None
    assert (rows[old]["peak_rss_bytes"], rows[old]["mean_cpu_percent"]) == (None, None)
    unreadable = summarize_run({**store.get_run(run.id), "config": {"dataset": "nope"}}, [])
    assert unreadable["problem"] and unreadable["peak_rss_bytes"] == run.telemetry.peak_rss_bytes


# -- through a worker process (slow lane) ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_sends_telemetry_and_records_the_figures(tmp_path):
    from core.runs.worker import WorkerProcess

    db = tmp_path / "runs.db"
    worker = WorkerProcess(str(EMPTY_DATA_DIR), str(db), threads=1, preload=None)
    try:
        assert worker.wait_ready(120)
        # ~0.2 s an epoch on the 5,000-digit sample: long enough for the once-a-second samples
        config = RunConfig(hidden_sizes=(256, 256), batch_size=16, epochs=8, device="cpu")
        worker.send("start", "worker-telemetry", config.to_dict(), [(8, 0.5)])
        messages = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.conn.poll(1):
                messages.append(worker.conn.recv())
                if messages[-1][0] in ("done", "error"):
                    break
        assert messages[-1][0] == "done" and messages[-1][1] == "finished", messages[-1]
        samples = [m[1] for m in messages if m[0] == "telemetry"]
        assert samples and all(isinstance(s, TelemetrySample) for s in samples)
        assert all(s.rss_bytes > 50 * 2**20 and s.gpu_note == CPU_RUN_NOTE for s in samples)
        assert samples[-1].seconds > 0 and len(samples[-1].cpu_percent) == psutil.cpu_count()
    finally:
        worker.close()
    row = Store(db).get_run("worker-telemetry")
    assert row["peak_rss_bytes"] == max(s.rss_bytes for s in samples)
    assert row["mean_cpu_percent"] > 10  # one busy training thread
    assert row["mean_gpu_percent"] is None


def test_the_pipe_serialises_sends_from_the_telemetry_thread_and_the_training_thread():
    from core.runs.worker import PipeCancel

    ours, theirs = socket.socketpair()
    link, far = PipeCancel(Connection(ours.detach())), Connection(theirs.detach())
    big = b"x" * 200_000  # larger than a socket buffer: unserialised sends would interleave their bytes
    received = []
    reader = threading.Thread(target=lambda: received.extend(far.recv() for _ in range(40)))
    reader.start()
    senders = [threading.Thread(target=lambda k=k: [link.send(k, big) for _ in range(20)]) for k in ("a", "b")]
    for t in senders:
        t.start()
    for t in senders + [reader]:
        t.join(30)
    assert sorted(m[0] for m in received) == ["a"] * 20 + ["b"] * 20 and all(m[1] == big for m in received)
