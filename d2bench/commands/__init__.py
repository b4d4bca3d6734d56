"""Sub-commands of ``d2bench``, one module per command family.

Every module here is imported when the CLI starts, so a module must not import torch (or any
other heavy package) at module level: it imports what it needs inside its handlers. A module
defines ``register(commands)`` to add top-level sub-commands; :mod:`d2bench.commands.bench`
alone defines ``register_bench(bench)``, adding every ``d2bench bench <what>`` sub-command. Both
receive an argparse sub-parsers object.
"""
