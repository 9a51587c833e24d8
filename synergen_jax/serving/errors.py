"""ApiError: a request the server refuses, with the status and the OpenAI-style body it answers."""

from __future__ import annotations

# OpenAI's error types by status; clients (the openai package) map the status to their exception.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error", 504: "timeout_error"}


class ApiError(Exception):
  """Refused request: `status` (4xx for the client's mistakes), a message naming the field, `param`
  (the field's path, e.g. "messages[0].content[1].image_url") and an optional machine `code`."""

  def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.code = status, message, param, code

  def body(self) -> dict:
    return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
  kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
  """A 400 for a malformed or out-of-range field."""
  return ApiError(400, message, param, code)
