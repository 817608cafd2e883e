"""``pyproxy explain``: which listener, route, rule and backend a request would take, what it
would look like upstream, and why the other routes did not match — worked out offline by the
code ``serve`` runs, from the snapshot ``serve`` would compile.

``options.py`` (the command line, light to import), ``command.py`` (load, compile, print),
``question.py`` (the request), ``probe.py`` (the data plane's calls), ``answer.py`` (the
answer), ``sources.py`` and ``why.py`` (back to the config; why routes lost), ``backends.py``
and ``render.py`` (what is shown)."""
