"""Reports drawn from runs: the figures shared by the HIL rig and the ground (plots.py)."""
