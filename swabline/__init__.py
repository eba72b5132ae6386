"""The ``swabline`` command and the development tooling around it (broker launcher, demo)."""
