"""A plugin whose import trips an assertion."""

assert False, "multibackend_asserting: configuration check failed on purpose"  # noqa: B011, PT015
