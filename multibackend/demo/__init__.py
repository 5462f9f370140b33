"""``multibackend demo``: a whole legacy-to-StreamSource cutover on one machine (see
:mod:`multibackend.demo.scenario`)."""

from multibackend.demo.report import Check, DemoReport, Phase
from multibackend.demo.scenario import DemoOptions, run_demo

__all__ = ["Check", "DemoOptions", "DemoReport", "Phase", "run_demo"]
