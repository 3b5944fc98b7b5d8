"""`python -m bot`: the `check` and `doctor` commands (bot.cli)."""

from bot.cli import main

raise SystemExit(main())
