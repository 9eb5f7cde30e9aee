"""The executive: modes, jobs, scheduling, accounting; it runs the node between link and engine."""
