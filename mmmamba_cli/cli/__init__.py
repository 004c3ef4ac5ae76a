"""The `mmmamba` command line: thin Typer commands over the library."""
