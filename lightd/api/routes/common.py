"""Models shared by every blueprint (the error body, plain messages).

Declarations only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused with their name, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    error: str


class MessageBody(BaseModel):
    message: str
