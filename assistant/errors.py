"""The error codes of the public contract, raised inside and translated once at the edge."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "invalid_request",
    "prompt_too_long",
    "forbidden_reply_topic",
    "busy",
    "timeout",
    "cancelled",
    "engine_failure",
    "shutting_down",
]


class RequestError(Exception):
    """A request that ends in an error reply; `code` is one of contract.md's codes."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def to_payload(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
