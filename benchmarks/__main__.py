"""`python -m benchmarks [...]` (speed and size), `python -m benchmarks quality [...]`
(seed variance of the pipeline), `python -m benchmarks shortcuts [...]` (the shortcut audit
of real corpora before and after preprocessing) or `python -m benchmarks real-speech [...]`
(the recommended real-speech detector, `make real-speech`) or `python -m benchmarks probe [...]`
(a layer-wise linear probe of the front ends under leave-one-corpus-out): see
benchmarks/README.md."""

import sys

if sys.argv[1:2] == ["shortcuts"]:
    from benchmarks.shortcuts import main

    sys.exit(main(sys.argv[2:]))

if sys.argv[1:2] == ["preprocess-baseline"]:
    from benchmarks.preprocess_baseline import main

    sys.exit(main(sys.argv[2:]))

if sys.argv[1:2] == ["quality"]:
    from benchmarks.quality import main

    sys.exit(main(sys.argv[2:]))

if sys.argv[1:2] == ["probe"]:
    from benchmarks.frontend_probe import main

    sys.exit(main(sys.argv[2:]))

if sys.argv[1:2] == ["real-speech"]:
    from benchmarks.real_speech import main

    sys.exit(main(sys.argv[2:]))

from benchmarks.run import main

sys.exit(main())
