"""The Swabline central server: MQTT ingest, database, web app and API."""

__version__ = "0.1.0"
