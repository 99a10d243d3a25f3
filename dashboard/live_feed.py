"""The live feed: a run's new epochs, per-batch points, progress, tiles and system readings reach the Train page
without a Streamlit rerun while it trains.

A Streamlit rerun costs the browser ~90 ms of CPU however little changes (measured with Chromium's
Performance.getMetrics), so a page redrawn a few times a second cost more than the run it watched. Instead:

- the server (dashboard/app.py serves the pages as an `st.App`) answers `GET /live/runs/<id>?e=&b=&bx=&shape=`
  (`routes()`): a long poll that waits up to WAIT_S for the next epoch to end, then returns what a page drawn at
  that cursor lacks (live_view.delta), with "rerun": true when the panel must also be redrawn;
- the page holds one invisible components-v2 element (`live_feed`, stream_chart_js/live_feed.js) that asks again
  GAP_S after each answer while the tab is visible, puts the text in place, hands the points to the chart elements
  (stream_chart.js's appendPoints) and triggers one fragment rerun when told to (the run ended, its status or the
  panel's shape changed). Without the route (a server started another way) it falls back to redrawing the panel
  every `fallback` seconds, as the poll did.

The route is read-only, on the same server and origin as the page (loopback unless configured otherwise).
"""
from __future__ import annotations

import re

from core.config import RunStatus
from core.runs.manager import RunSnapshot

from . import live_view

# A page asks GAP_S after each answer, and the server answers at the next epoch end (or after WAIT_S, with the
# batches since), so answers come at epoch ends at least GAP_S apart: with 0.2 s epochs every second or third
# epoch, each epoch shown under ~0.5 s after it ends. Each update costs Chromium ~25 ms (mostly painting the two
# charts): a page answered at every epoch of a 0.13 s/epoch run took ~0.22 core, one at most every 0.4 s ~0.16.
GAP_S = 0.35
WAIT_S = 0.5  # also how stale the per-batch line may get within a long epoch (no CPU: a condition wait)
QUEUED_GAP_S = 2.0  # a queued run's page only shows its place in the queue
ROUTE = "/live/runs/{run_id}"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
WAIT_THREADS = 16  # long polls waiting at once (their own pool: Streamlit's file serving keeps its threads)

# The element's own code: it loads the module (once per page) and hands over, like stream_chart's loader.
_LOADER_JS = """
export default function (args) {
  const src = args.data && args.data.js;
  if (!src) return;
  const load = import(new URL(src, document.baseURI).href);
  load.then((m) => m.render(args), (e) => console.error("live_feed:", e));
  return () => load.then((m) => m.unmount(args.parentElement));
}
"""
_element = None


def _ignore() -> None:
    """The trigger's only job is the fragment rerun it causes."""


def live_feed(snap: RunSnapshot, fallback_s: float, key: str = "live_feed") -> None:
    """Inside the live panel's fragment, while the run is active: the element that keeps the page current. It
    also shows the run's learning warnings (plain text), which can change at every epoch."""
    global _element
    import streamlit as st

    from .stream_chart import base_path, module_url, plotly_url

    if _element is None:
        _element = st.components.v2.component("mlp_live_feed", js=_LOADER_JS)
    data = {"js": module_url("live_feed.js"), "url": base_path() + ROUTE.format(run_id=snap.run_id),
            "run": snap.run_id, "active": snap.active, "cursor": live_view.cursor(snap),
            "shape": live_view.panel_shape(snap), "gap": QUEUED_GAP_S if snap.status == RunStatus.QUEUED else GAP_S,
            "fallback": fallback_s, "plotly": None if snap.status == RunStatus.QUEUED else plotly_url(),
            "warnings": live_view.live_warnings(snap)}
    _element(key=key, data=data, on_changed_change=_ignore)


# -- the route ------------------------------------------------------------------------------------------------------
def _since(query) -> dict:
    bx = query.get("bx")
    return {"e": int(query.get("e", 0)), "b": int(query.get("b", 0)), "bx": float(bx) if bx else None}


def wait_for_news(manager, run_id: str, shape: str) -> RunSnapshot | None:
    """The run's snapshot once its next epoch has ended, it has ended or the page needs a redraw; else after
    WAIT_S. An epoch that ended before the request waits for the next one: see GAP_S."""
    snap = manager.snapshot(run_id)
    if snap is None or not snap.active or live_view.panel_shape(snap) != shape:
        return snap
    return manager.wait_for_epoch(run_id, len(snap.epochs), WAIT_S)


def routes() -> list:
    """The live feed's route, for st.App(routes=...)."""
    import anyio
    import anyio.to_thread
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from .stream_chart import base_path

    limiter = []

    async def live_run(request):
        run_id = request.path_params["run_id"]
        try:
            since = _since(request.query_params)
        except ValueError:
            return JSONResponse({"error": "bad cursor"}, status_code=400)
        if not _RUN_ID.fullmatch(run_id):
            return JSONResponse({"error": "bad run id"}, status_code=400)
        from .state import get_manager  # the pages' manager (st.cache_resource: one per server process)

        if not limiter:
            limiter.append(anyio.CapacityLimiter(WAIT_THREADS))
        shape = request.query_params.get("shape", "")
        snap = await anyio.to_thread.run_sync(lambda: wait_for_news(get_manager(), run_id, shape),
                                              limiter=limiter[0])
        return JSONResponse(live_view.delta(snap, since, shape), headers={"Cache-Control": "no-store"})

    return [Route(base_path() + ROUTE, live_run, methods=["GET"])]
