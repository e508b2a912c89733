from vitprint.cli import main

raise SystemExit(main())
