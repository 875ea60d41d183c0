"""Convergence: the pure planner, the executor, the workqueue and the controller loop."""
