"""The one settings sidebar (dashboard/controls.py): its ranges and choices agree with core.config, and Train's and
Compare's widgets keep the keys and defaults they had (share links and open tabs rely on them)."""
from __future__ import annotations

import pytest

from core.config import OPTIMIZERS, PIPELINES, RunConfig
from dashboard import controls
from dashboard.controls import COMPARE, RANGES, TRAIN, widget_values


def test_every_range_end_is_a_valid_run_setting():
    fields = {"hidden": "hidden_sizes", "batch": "batch_size", "epochs": "epochs", "seed": "seed"}
    for name, field in fields.items():
        for value in RANGES[name]:
            RunConfig(**{field: (value,) if field == "hidden_sizes" else value})  # raises if outside the limits
    for layers in RANGES["layers"]:
        RunConfig(hidden_sizes=(32,) * layers)


def test_labels_cover_the_choices():
    assert set(controls.OPTIMIZER_LABELS) == set(OPTIMIZERS)
    assert set(controls.PIPELINE_LABELS) == set(PIPELINES)


def test_lr_choices_add_the_value_to_show():
    assert controls.lr_choices() == sorted(controls.LR_OPTIONS)
    assert 0.07 in controls.lr_choices(0.07, 0.5) and controls.lr_choices(0.07) == sorted(controls.lr_choices(0.07))


def test_train_keys_and_defaults_are_unchanged(monkeypatch):
    monkeypatch.setattr(controls, "default_device", lambda: "cpu")
    assert widget_values(RunConfig(), TRAIN) == {
        "cfg_dataset": "mnist", "cfg_hidden": 32, "cfg_layers": 1, "cfg_activation": "relu", "cfg_batch": 100,
        "cfg_lr": 0.5, "cfg_epochs": 5, "cfg_optimizer": "sgd", "cfg_seed": 42, "cfg_per_layer_mode": False,
        "cfg_hidden_list": "32", "cfg_device": "cpu", "cfg_pipeline": "resident"}


def test_compare_keys_and_defaults_are_unchanged():
    # the Compare page's own copy of these defaults, before the sidebar was shared
    assert widget_values(RunConfig(), COMPARE) == {
        "cmp_dataset": "mnist", "cmp_hidden": 32, "cmp_layers": 1, "cmp_activation": "relu", "cmp_batch": 100,
        "cmp_lr": 0.5, "cmp_epochs": 5, "cmp_optimizer": "sgd", "cmp_seed": 42}


@pytest.mark.parametrize("sizes, fits", [((32,), True), ((64, 64), True), ((128, 64), False), ((2048,), False),
                                         ((32,) * 5, False), ((12,), True)])
def test_fits_sliders(sizes, fits):
    assert controls.fits_sliders(sizes) is fits


def test_compare_sidebar_gives_the_default_device_and_pipeline_whatever_its_page_keeps():
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st

        from dashboard.controls import COMPARE, config_from_state, settings_sidebar

        st.session_state.cmp_pipeline = True  # the Compare page's pipeline switch shares the prefix
        settings_sidebar(COMPARE)
        st.session_state.config_now = config_from_state(COMPARE).to_dict()

    at = AppTest.from_function(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert RunConfig.from_dict(at.session_state.config_now) == RunConfig()
    assert at.sidebar.header[0].value == "Experiment" and at.slider(key="cmp_hidden").value == 32
    assert not [w for w in at.sidebar.selectbox if w.key in ("cmp_pipeline", "cmp_device")]
