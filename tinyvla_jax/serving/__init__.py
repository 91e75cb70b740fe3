"""Serving a trained policy: the observation schema, openpi's wire format, in-process inference
(`load_policy`), the websocket server and its client. See serving/inference.py for the Python API and
serving/server.py for the protocol."""
