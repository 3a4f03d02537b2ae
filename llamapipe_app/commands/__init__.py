"""The `llamapipe` command's subcommands, one module per group; `cli.py` assembles them.

Commands are thin: they parse flags, call `pipelines`, and print. Nothing in `pipelines`
or `evals` imports from here.
"""
