"""llamapipe's front ends, under one name of their own so they collide with no other package:

- commands/  the `llamapipe` command's subcommands (`cli.py` assembles them)
- web/       `llamapipe serve`: the HTTP API and the page

Both only parse, call the composition layer (`pipelines.Toolkit`) and print. Nothing in
`pipelines` or `evals` imports from here.
"""
