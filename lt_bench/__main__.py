from lt_bench.cli import main

raise SystemExit(main())
