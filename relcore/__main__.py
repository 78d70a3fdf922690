from relcore.cli import main

raise SystemExit(main())
