"""`python -m pretrain_bench.cli`: the same as the `pretrain-bench` command."""

import sys

from pretrain_bench.cli import main

sys.exit(main())
