"""Replaying a recording: ``offline`` (check, simulate: no display, no model) and ``live``
(execute on the desktop, optionally healing with the model). The command is in
``agent.commands.replay``."""
