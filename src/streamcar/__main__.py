"""``python -m streamcar`` and the ``streamcar`` command (pyproject's console script names :func:`entry`)."""

from streamcar import interrupts


def entry() -> int:
    """The command line; a Ctrl-C ends it with one line and exit 130 whatever it was doing (interrupts.py)."""
    interrupts.watch()
    try:
        # pydantic-core (Rust) imports datetime's C API with a panic on failure, which a Ctrl-C during that import
        # is, and Rust prints a panic to stderr itself: imported here, a Ctrl-C meanwhile is a KeyboardInterrupt
        import datetime  # noqa: F401

        from streamcar.cli import main

        code = main()
    except BaseException as exc:  # a Ctrl-C during the import, or one a library turned into its own exception
        if isinstance(exc, SystemExit) or not (isinstance(exc, KeyboardInterrupt) or interrupts.seen()):
            raise
        code = interrupts.said()
    if code == interrupts.INTERRUPTED:
        interrupts.leave(code)
    return code


if __name__ == "__main__":
    raise SystemExit(entry())
