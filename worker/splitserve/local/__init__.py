"""`splitserve run` and `splitserve demo`: a SplitService as local processes.

- `spec`: spec YAML → validated plan → worker and router command lines.
- `processes`: one child process (log file, ready line, stop without orphans).
- `stack`: the service's workers and router together; `view`: the live terminal view.
- `run`, `demo`: the commands.
"""
