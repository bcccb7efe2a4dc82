"""tests/images/open_clip needs torch + torchvision + open_clip, which live in their own venv.

The main suite never imports them (torchvision beside the main venv's CPU torch breaks
transformers): ``test_open_clip_suite.py`` runs that folder in ``.venv-images`` as a
subprocess, and fails when the venv is missing. That runner sets
``CACHEDEMBED_IMAGES_VENV=1``, which is what lets the folder be collected.
"""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("CACHEDEMBED_IMAGES_VENV") == "1" else ["open_clip"]
