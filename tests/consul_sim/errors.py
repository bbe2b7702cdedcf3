"""Errors the HTTP layer turns into Consul's status codes and plain-text bodies."""


class APIError(Exception):
    def __init__(self, status, text, headers=None):
        Exception.__init__(self, text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def permission_denied():
    return APIError(403, "Permission denied")
