"""Test-set evaluation of one model: accuracy, confusion matrix, per-class accuracy, sample predictions.

All numbers come from core.engine.evaluate (one torch pass over the test split, cached per model); this
panel only lays them out.
"""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.config import RunConfig
from core.engine.data import DataError, load_dataset
from core.engine.evaluate import Evaluation, ModelLoadError, display_images, evaluate_weights, evaluation_cost

from . import history_charts
from .text import md

AUTO_EVAL_MACS = 3e10  # evaluate without asking below this many multiply-accumulates (~a second on a laptop CPU)
GRID_COLUMNS = 8
IMAGE_PX = 112  # drawn size of a sample image


def data_dir() -> str | None:
    return os.environ.get("DATA_DIR")


@st.cache_data(max_entries=8, show_spinner="Evaluating on the test split…")
def cached_evaluation(token: str, data_dir: str | None, _config: RunConfig, _state_dict: dict) -> Evaluation:
    """One evaluation per model version: `token` names it (run id + checkpoint time, or the file's hash)."""
    return evaluate_weights(_config, _state_dict, data_dir=data_dir)


def evaluation_panel(config: RunConfig, state_dict: dict, token: str, *, key: str,
                     recorded_test_acc: float | None = None, trained_on: str = "", weights_note: str = "") -> None:
    """Evaluate the weights (or offer a button for big models) and draw the results.

    `weights_note` is markdown (escape the user text in it); `trained_on` is plain text."""
    if weights_note:
        st.caption(weights_note)
    asked = st.session_state.get(f"{key}_asked") == token
    cost = evaluation_cost(config)
    if cost > AUTO_EVAL_MACS and not asked:
        st.info(f"This model needs about {cost / 1e9:,.0f} G multiply-adds for one pass over the test split.")
        if st.button("Evaluate on the test split", key=f"{key}_go"):
            st.session_state[f"{key}_asked"] = token
            st.rerun()
        return
    try:
        evaluation = cached_evaluation(token, data_dir(), config, state_dict)
    except (DataError, ModelLoadError) as exc:
        st.error(f"Cannot evaluate: {md(exc)}")
        return
    draw_evaluation(evaluation, key=key, recorded_test_acc=recorded_test_acc, trained_on=trained_on)


def draw_evaluation(ev: Evaluation, *, key: str, recorded_test_acc: float | None = None, trained_on: str = "") -> None:
    cols = st.columns(3)
    cols[0].metric("Test accuracy", f"{ev.accuracy:.2%}",
                   help="On the official test split, which training and model selection never see.")
    cols[1].metric("Test loss", f"{ev.loss:.4f}")
    cols[2].metric("Mistakes", f"{ev.mistakes:,} of {ev.n:,}")
    note = f"Evaluated on the {ev.data_title} test split: {ev.n:,} images."
    if recorded_test_acc is not None:
        same = abs(recorded_test_acc - ev.accuracy) < 1e-9
        note += (" Same as the test accuracy recorded when the run ended." if same else
                 f" The run recorded {recorded_test_acc:.2%} when it ended (on the data it had then).")
    st.caption(note)
    if trained_on and trained_on != ev.data_source:
        st.warning(f"This model was trained with data source '{md(trained_on)}', but this server has "
                   f"'{md(ev.data_source)}': the test images are not the ones the run was tested on.")

    left, right = st.columns(2)
    normalize = left.toggle("Show each row as % of its class", key=f"{key}_norm")
    left.plotly_chart(history_charts.confusion_figure(ev.confusion, ev.classes, normalize),
                      config=history_charts.CONFIG, key=f"{key}_confusion")
    right.plotly_chart(history_charts.per_class_figure(ev.per_class_accuracy, ev.classes),
                       config=history_charts.CONFIG, key=f"{key}_per_class")
    with right.expander("Per-class table"):
        st.dataframe(pd.DataFrame({"class": ev.classes, "test images": ev.class_counts,
                                   "correct": [int(ev.confusion[c, c]) for c in range(len(ev.classes))],
                                   "accuracy": ev.per_class_accuracy}),
                     hide_index=True, column_config={"accuracy": st.column_config.NumberColumn(format="percent")})
    draw_samples(ev, key=key)


def draw_samples(ev: Evaluation, *, key: str) -> None:
    st.markdown("**Sample predictions**")
    cols = st.columns([1.2, 1.2, 1.6], vertical_alignment="bottom")
    only_mistakes = cols[0].toggle("Only mistakes (most confident first)", value=True, key=f"{key}_mistakes",
                                   help="Off: the mistakes first, then correct predictions from every class.")
    class_options = [None, *range(len(ev.classes))]
    true_class = cols[1].selectbox("True class", class_options, key=f"{key}_class",
                                   format_func=lambda c: "all classes" if c is None else ev.classes[c])
    count = cols[2].slider("Images", GRID_COLUMNS, 8 * GRID_COLUMNS, 3 * GRID_COLUMNS, step=GRID_COLUMNS,
                           key=f"{key}_count")
    indices = ev.sample_indices(count, only_mistakes=only_mistakes, true_class=true_class)
    if not indices:
        st.info("No mistakes here." if only_mistakes else "No test images of this class.")
        return
    dataset = load_dataset(ev.dataset, data_dir())
    side = dataset.image_shape[-1]
    images = display_images(dataset, indices, scale=max(1, IMAGE_PX // side))
    for first in range(0, len(indices), GRID_COLUMNS):
        row = st.columns(GRID_COLUMNS)
        for col, i, image in zip(row, indices[first:first + GRID_COLUMNS], images[first:first + GRID_COLUMNS]):
            col.image(image, caption=sample_caption(ev, i))


def sample_caption(ev: Evaluation, i: int) -> str:
    true, pred, conf = int(ev.labels[i]), int(ev.predicted[i]), float(ev.confidence[i])
    if true == pred:
        return f"✓ {ev.classes[pred]} ({conf:.0%})"
    return f"✗ {ev.classes[true]} → {ev.classes[pred]} ({conf:.0%})"
