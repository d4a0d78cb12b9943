"""The ``lenspsf`` command line: one module per subcommand, each calling the public API.

Every module here exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning an exit code.
"""
