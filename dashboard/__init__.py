"""The Streamlit dashboard: controls, live run panel, charts. All training goes through core/."""
