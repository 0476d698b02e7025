"""CLI commands beyond `image`: thin Typer shells, each registered on the main app by cli.py."""
