"""An entry point target that imports fine but is not a backend class."""

thing = {"not": "a backend"}
