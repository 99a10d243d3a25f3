"""Entry point: `streamlit run dashboard/app.py`.

One file, two roles. `streamlit run` finds the `st.App` below and serves it (Starlette on uvicorn), with the live
feed's route beside Streamlit's own (dashboard/live_feed.py); the App then runs this same file as its page script
(`__name__ == "__main__"`, as in AppTest), which registers the pages.
"""
from __future__ import annotations

import streamlit as st

if __name__ == "__main__":
    from dashboard import pages
    from dashboard.compare_page import compare_page
    from dashboard.history_page import history_page
    from dashboard.state import identify_tab
    from dashboard.sweep_page import sweep_page
    from dashboard.train_page import train_page

    st.set_page_config(page_title="MLP training lab", page_icon="📈", layout="wide")

    pages.navigation({pages.TRAIN: train_page, pages.HISTORY: history_page, pages.COMPARE: compare_page,
                      pages.SWEEP: sweep_page}).run()
    # Last: the tab's id arrives with a rerun, and a rerun that cut into the first run (before the sidebar's widgets
    # existed) left them at their minimums.
    identify_tab()
else:
    import atexit
    import contextlib

    import anyio.to_thread

    from dashboard.live_feed import routes

    @contextlib.asynccontextmanager
    async def stop_runs(_app):
        yield
        # uvicorn ends a graceful stop by raising the signal again with its default action, so the interpreter's
        # exit handlers (the run managers' shutdown: runs recorded as interrupted, workers ended) never run: run
        # them now, once the server has stopped taking requests (each manager's shutdown runs once).
        await anyio.to_thread.run_sync(atexit._run_exitfuncs)

    app = st.App(__file__, routes=routes(), lifespan=stop_runs)

