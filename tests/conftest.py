import os

# Torch/OpenMP threads for the test processes: make test sets it from infra/run_tests.sh; an ad-hoc
# pytest run defaults to one thread, because two processes with two OpenMP threads each on a
# 2-core machine spin against each other and run ~10x slower (see docs/sam2.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.fixtures_db import *  # noqa: E402,F401,F403
from tests.fixtures_s3 import *  # noqa: E402,F401,F403
from tests.fixtures_labelstudio import *  # noqa: E402,F401,F403
from tests.fixtures_fiftyone import *  # noqa: E402,F401,F403
