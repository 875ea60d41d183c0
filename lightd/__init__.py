"""lightd: a declarative node daemon that runs long-lived apps in Docker containers.

This package root only names the version; it must not import anything heavy.
"""

__version__ = "0.1.0"
