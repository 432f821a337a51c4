from streamcar.cli import main

raise SystemExit(main())
