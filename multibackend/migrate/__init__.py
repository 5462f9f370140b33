"""Migration tools on the journal and id map: backfill, verify (and repair), shadow reads,
cutover and rollback. ``docs/migration.md`` is the runbook."""

from multibackend.migrate.backfill import Backfill, BackfillResult
from multibackend.migrate.compare import FieldDiff, canonical, compared_fields, diff_streams
from multibackend.migrate.cutover import Cutover, CutoverOutcome, CutoverPolicy
from multibackend.migrate.phases import PHASES, CutoverState, WriteFenced
from multibackend.migrate.progress import Progress
from multibackend.migrate.shadow import ShadowReader, ShadowReport, ShadowStats, shadow_report
from multibackend.migrate.verify import Difference, Verifier, VerifyResult

__all__ = [
    "PHASES",
    "Backfill",
    "BackfillResult",
    "Cutover",
    "CutoverOutcome",
    "CutoverPolicy",
    "CutoverState",
    "Difference",
    "FieldDiff",
    "Progress",
    "ShadowReader",
    "ShadowReport",
    "ShadowStats",
    "Verifier",
    "VerifyResult",
    "WriteFenced",
    "canonical",
    "compared_fields",
    "diff_streams",
    "shadow_report",
]
