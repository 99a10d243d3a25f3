"""The training engine: config, data, devices, model, training loop and run store. Never imports Streamlit."""
