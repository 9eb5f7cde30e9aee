"""The HIL rig's environment: one small module per physical model, composed by environment.py.

- orbit.py       satellite position, illumination and eclipse windows over a run (flight/orbit).
- stations.py    ground stations and their contact windows (rise, culmination, set).
- power.py       solar array and battery, with energy bookkeeping.
- thermal.py     two lumped thermal nodes (board, radiator) radiating to deep space.
- radiation.py   single-event upsets as a Poisson process, flipped into the engine's memory.
- environment.py all of them stepped together in simulated time (the rig's contract).

default.tle: S-NET D (NORAD 43186, COSPAR 2018-014G), one of TU Berlin's four ~9 kg S-NET
nanosatellites, in a ~540 km sun-synchronous orbit (97.57°, e = 0.0008). Elements as published
in the NORAD general perturbations catalogue (CelesTrak/Space-Track), epoch 2025-02-09 07:06:07
UTC; taken from a public copy of that catalogue, checksums verified by flight.orbit.parse_tle.
"""
