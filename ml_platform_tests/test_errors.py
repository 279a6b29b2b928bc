"""What users read of a library's failure: its first line, or its type when it says nothing."""

import duckdb

from ml_platform.errors import first_line


def test_the_first_line_of_a_failure_is_said_cut_to_its_limit():
    assert first_line(ValueError("  bad file\nTraceback-like detail\nmore")) == "bad file"
    assert first_line(ValueError("x" * 500), limit=40) == "x" * 40


def test_a_failure_that_says_nothing_is_named_by_its_type():
    # The landing error took line [0] of an empty message: IndexError instead of the file's name.
    assert first_line(duckdb.IOException("")) == "IOException"
    assert first_line(RuntimeError("   \n  ")) == "RuntimeError"
