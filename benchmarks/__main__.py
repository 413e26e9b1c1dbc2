"""`python -m benchmarks [...]` (speed and size) or `python -m benchmarks quality [...]`
(seed variance of the pipeline): see benchmarks/README.md."""

import sys

if sys.argv[1:2] == ["quality"]:
    from benchmarks.quality import main

    sys.exit(main(sys.argv[2:]))

from benchmarks.run import main

sys.exit(main())
