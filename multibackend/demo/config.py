"""The demo's configuration file: legacy SQLite primary (journal in the same database),
StreamSource secondary, shadow reads and the cutover's limits.

``render_config(base_url)`` writes what ``multibackend demo`` runs with (the emulator's URL
filled in); ``config/demo.toml`` in the repository is the same text with the URL taken from
``$STREAMSOURCE_URL`` (a test keeps the two equal).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEMO_EMAIL", "DEMO_PASSWORD", "EXAMPLE_URL", "render_config"]

#: The emulator's throwaway editor account (it exists only inside the demo's emulator).
DEMO_EMAIL: Final = "editor@example.com"
DEMO_PASSWORD: Final = "Demo-Passw0rd"
#: What ``config/demo.toml`` says for the StreamSource URL.
EXAMPLE_URL: Final = "${STREAMSOURCE_URL:-http://127.0.0.1:3000}"

_TEMPLATE: Final = """\
# The configuration `multibackend demo` runs with: a legacy SQLite database (the Node app's
# "Streams" table) moving to StreamSource, with the sync journal in the legacy database.
#
# `make demo` writes it, with its emulator's URL, to demo-work/multibackend.toml beside the
# legacy.db it seeds. To look at what the demo left:
#   multibackend streams -c demo-work/multibackend.toml --backend legacy list --status live
#   multibackend cutover -c demo-work/multibackend.toml status
#   multibackend shadow -c demo-work/multibackend.toml report
# To run the steps yourself, copy this file next to a legacy.db and start an emulator
# (docs/emulator.md) or point STREAMSOURCE_URL at a real server:
#   python -m multibackend_streamsource.emulator --port 3000 \\
#       --user editor@example.com:Demo-Passw0rd:editor &
#   multibackend cutover -c demo.toml advance          # -> dual-write
#   multibackend backfill -c demo.toml --from legacy --to streamsource
#   multibackend verify -c demo.toml --between legacy streamsource
# The runbook is docs/migration.md; every key is in docs/configuration.md.

[backends.legacy]
plugin = "sql"
# A relative SQLite path resolves against this file's folder.
url = "sqlite:///legacy.db"
schema = "streamsource-legacy"
# Deletes set "isExpired", as the legacy app did; expired rows are invisible through multibackend.
delete = "soft"
# The app, its sync worker and the operator's tools share this file: wait for its lock.
busy_timeout_ms = 30000

[backends.streamsource]
plugin = "streamsource"
base_url = "{base_url}"
# The demo emulator's throwaway editor. For a real server, use the environment:
#   email = "${{STREAMSOURCE_EMAIL}}"  password = "${{STREAMSOURCE_PASSWORD}}"
email = "${{STREAMSOURCE_EMAIL:-{email}}}"
password = "${{STREAMSOURCE_PASSWORD:-{password}}}"
# The demo's emulator allows 20,000 requests a minute; the real server allows 1,000
# (leave this at its default, 1000, there).
requests_per_minute = 20000
max_rate_limit_wait = 30

[manager]
primary = "legacy"
secondaries = ["streamsource"]
on_secondary_failure = "journal"
read_from = "primary"
worker = "embedded"

[journal]
# The legacy database itself: a primary write and its journal rows commit in one transaction.
url = "sqlite:///legacy.db"

[sync]
max_attempts = 12
backoff_base = 0.2
backoff_cap = 5.0
batch_size = 200

[shadow]
# Repeat reads on StreamSource and compare (they count only while the legacy side is primary).
backend = "streamsource"
sample = 1.0
timeout = 2.0

[cutover]
legacy = "legacy"
new = "streamsource"
fence_timeout = 20.0
fence_grace = 0.2
min_shadow_reads = 200
max_shadow_mismatch_rate = 0.01
"""


def render_config(base_url: str = EXAMPLE_URL) -> str:
    """The configuration text for a StreamSource server at ``base_url``."""
    return _TEMPLATE.format(base_url=base_url, email=DEMO_EMAIL, password=DEMO_PASSWORD)
