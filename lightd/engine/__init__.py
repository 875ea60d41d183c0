"""The Docker engine boundary: the only package that imports ``docker``."""

from lightd.engine.adapter import DockerEngine, EngineStatus

__all__ = ["DockerEngine", "EngineStatus"]
