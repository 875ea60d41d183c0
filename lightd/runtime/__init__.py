"""Runtime observation of running containers: console output, start detection, streams."""
