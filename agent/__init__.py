"""The Swabline station agent: runs on each Raspberry Pi scanner station."""

__version__ = "0.1.0"
