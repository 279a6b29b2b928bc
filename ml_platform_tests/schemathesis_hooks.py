"""Checks schemathesis runs on every answer of the fuzzed API (loaded through SCHEMATHESIS_HOOKS)."""

import schemathesis


@schemathesis.check
def no_traceback(ctx, response, case) -> None:
    """Bad input is answered with a message, never with a Python traceback, whatever the status."""
    if "Traceback (most recent call last)" in response.text or 'File "/' in response.text:
        raise AssertionError(f"{case.operation.label} answered a traceback: {response.text[:300]}")
