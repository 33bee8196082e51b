from surat.cli import main

raise SystemExit(main())
