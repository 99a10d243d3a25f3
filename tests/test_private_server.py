"""The dashboard is private unless told otherwise: it listens on 127.0.0.1 only, keeps XSRF protection on, accepts
uploads up to the weights file of the largest model it allows (and no more), and an uploaded file cannot run code."""
from __future__ import annotations

import io
import pathlib
import socket
import tomllib
import urllib.error
import urllib.request

import pytest
import torch

from browser_support import ROOT, dashboard
from core.config import OPTIMIZERS, Phase, RunConfig
from core.exchange.weights import WeightsFileError, read_weights, run_weights_bytes
from core.engine.memory import WEIGHTS_FILE_EXTRA_BYTES, largest_weights_file_bytes, weights_file_bytes
from core.runs.training_run import TrainingRun
from core.runs.store import Store

MIB = 1024 * 1024
SETTINGS = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def test_config_binds_to_loopback_with_xsrf_on():
    assert SETTINGS["server"]["address"] == "127.0.0.1"
    assert SETTINGS["server"]["enableXsrfProtection"] is True


def test_upload_limit_fits_the_largest_weights_file_and_not_much_more():
    limit = SETTINGS["server"]["maxUploadSize"] * MIB
    largest = largest_weights_file_bytes()
    assert largest <= limit < largest + MIB


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_weights_file_estimate_bounds_a_real_export(optimizer, small_sample, tmp_path):
    config = RunConfig(hidden_sizes=(256, 128), optimizer=optimizer, lr=0.01, batch_size=200)
    run = TrainingRun(config, store=Store(tmp_path / "runs.db"), dataset=small_sample)
    run.run_schedule([Phase(1, 0.01)])
    size = len(run_weights_bytes(run.store, run.id))
    estimate = weights_file_bytes(config)
    assert estimate - WEIGHTS_FILE_EXTRA_BYTES < size <= estimate  # the tensors are most of it; the rest is small


class Payload:
    """Unpickling this object calls its __reduce__ result: here, creating a file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_weights_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"config": RunConfig().to_dict(), "state_dict": {}, "run": Payload(marker)}, buffer)
    with pytest.raises(WeightsFileError):
        read_weights(buffer.getvalue(), name="'evil.pt'")
    assert not marker.exists()
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)  # the same bytes, unpickled unsafely: it runs
    assert marker.exists()


def non_loopback_address() -> str | None:
    """This machine's address on its network (None on a machine without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.slow  # a real Streamlit server
def test_server_accepts_only_loopback_and_refuses_uploads_without_xsrf(tmp_path):
    log = tmp_path / "server.log"
    (tmp_path / "data").mkdir()
    with dashboard(log, tmp_path / "data", tmp_path / "runs.db") as (_server, port):
        printed = log.read_text()
        assert "Network URL" not in printed and "http://127.0.0.1:" in printed, printed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as response:
            assert response.read() == b"ok"
        address = non_loopback_address()
        if address is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=5).close()
        upload = urllib.request.Request(f"http://127.0.0.1:{port}/_stcore/upload_file/session/file", method="PUT",
                                        data=b"x" * 100, headers={"Content-Type": "application/octet-stream"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(upload, timeout=10)
        assert refused.value.code == 403
