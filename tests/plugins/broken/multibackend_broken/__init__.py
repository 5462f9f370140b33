"""A plugin that fails while being imported, as one with a missing driver would."""


def _load_driver() -> None:
    raise RuntimeError("multibackend-broken is broken on purpose: its driver cannot be loaded")


_load_driver()
