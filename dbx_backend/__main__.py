"""`python -m dbx_backend` is the `dbx-backend` command."""

from dbx_backend.cli import main

raise SystemExit(main())
