"""Sub-commands of ``d2bench``, one module per command family.

Every module here is imported when the CLI starts, so a module must not import torch (or any
other heavy package) at module level: it imports what it needs inside its handlers. A module
defines ``register(commands)`` to add top-level sub-commands and/or ``register_bench(bench)``
to add ``d2bench bench <what>`` sub-commands; both receive an argparse sub-parsers object.
"""
