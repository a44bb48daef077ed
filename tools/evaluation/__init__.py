"""Offline evaluation of the recommendation core: data split, metrics, baselines, served mode.

`python -m tools.evaluate` is the command line; docs/quality.md records its results.
"""

import sys
from pathlib import Path

# The Lambda code in src/ imports its modules as top-level names (`import
# recommender`) because the Lambda runtime puts src/ on the path. Doing the same
# here makes the evaluation run those very modules.
SRC_DIR = Path(__file__).resolve().parent.parent.parent / "src"
if str(SRC_DIR) not in sys.path:
    sys.path.insert(0, str(SRC_DIR))
