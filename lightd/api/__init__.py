"""The HTTP and WebSocket facade (Quart): validates input, writes desired state, reads state.

It must not call the Docker engine to change anything; the reconciler does that.
"""
