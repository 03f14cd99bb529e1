"""python -m proxy → the gemini-meter CLI."""

from .cli import main

raise SystemExit(main())
