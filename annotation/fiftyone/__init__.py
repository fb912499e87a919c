"""FiftyOne curation (issue 6): publish the engine's database to a FiftyOne video dataset, saved
views for curators, curation tags back into the database, and the local services it needs.

- ``mongod``: the private MongoDB FiftyOne stores its datasets in (``infra/fiftyone/`` scripts).
- ``app``: the FiftyOne App server (headless) and a Chromium screenshot helper.
- ``publish``: incremental, bulk publication (``add_samples`` / ``set_values``).
- ``views``: saved views (least confident, most corrected, rejected, GT disagreement, duplicates).
- ``tags``: ``reannotate`` / ``exclude`` / ``needs-review`` tags -> ``curation_tags`` rows.

FiftyOne reads its ``FIFTYONE_*`` configuration when it is first imported, so nothing in this
package imports ``fiftyone`` at module level: the modules that need it import it inside their
functions, after the composition root (``pipelines.settings.Settings.configure_fiftyone``) or a
test fixture has set the environment. This package reads no environment variable itself.
"""
from __future__ import annotations

CURATION_TAGS = ("reannotate", "exclude", "needs-review")
