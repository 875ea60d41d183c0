"""pydantic models of desired and observed documents, and shared identifier rules.

Pure data: must not import asyncio, quart or docker.
"""
