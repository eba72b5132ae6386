"""``swabline simulate``: many stations from one process, to load a broker and a server.

``uplink`` drives paho-mqtt clients from one asyncio loop; ``staff`` invents what sampling staff
scan; ``fleet`` runs the real ``agent.station.Station`` logic for each simulated station;
``spawn`` starts a broker and server to aim at; ``cli`` is the command.
"""
