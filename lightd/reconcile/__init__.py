"""Convergence: typed actions, the pure planner, the executor, the workqueue, the controller.

``actions`` and ``planner`` decide (pure, no asyncio); ``executor`` applies one action
through the ``Engine`` seam and returns an observed-state patch; ``controller`` runs the
workers and is the one writer of observed state; ``workqueue`` knows keys, not meanings.
"""
