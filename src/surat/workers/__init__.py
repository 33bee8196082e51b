"""`[server] workers = N`: a supervisor process and N worker processes (docs/workers.md).

- `supervisor`: the parent. Recovers the store once, binds the listeners, starts the workers with
  the listening sockets and a relay socket each, restarts a worker that dies, stops all on
  SIGTERM/SIGINT;
- `child`: one worker, a whole `SuratServer` on the inherited sockets, its store opened without
  recovery; worker 0 alone runs the outbound queue;
- `relay`: the change feed across the workers.
"""
