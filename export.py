from hedged.cli.export import main

raise SystemExit(main())
