"""Test kit for backends and their users: the conformance suite and fault injection."""
