"""The ``kitty-orch`` command line (entry point :func:`kitty.cli.main.main`), built with Typer.

One module per command (run, resume, serve, fleet, endpoints, bench) plus the live run view;
it uses the same public surface as users: ``graph``, ``endpoints``, ``ops``, ``agents``,
:mod:`kitty.errors` and :mod:`kitty.service`.
"""
