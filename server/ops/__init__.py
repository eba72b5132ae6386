"""Central ops: station status, heartbeat history, alerts, remote commands, fleet metrics.

``status``, ``schedule`` and ``rules`` are pure (plain data in, decisions out); ``fleet``,
``history``, ``alerts`` and ``commands`` do the database work; ``monitor`` runs them
periodically; ``web`` and ``metrics`` show the result. ``docs/ops.md`` is the operator's guide.
"""
