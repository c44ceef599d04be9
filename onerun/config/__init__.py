"""The configuration engine: from etc-dist and the settings to the files in /etc/one.

- ``render``: the plan actions that write every config, from the image's upstream copies
  (etc-dist) plus onerun's settings and ``ONERUN_CONFIG`` overrides;
- ``oneconf``: oned.conf's and monitord.conf's grammar (parse, override, print);
- ``yamlconf``: the YAML configs of OneFlow, OneGate, FireEdge and the others;
- ``templates/``: what is rendered from a template rather than edited from etc-dist.

docs/configuration-engine.md has the rules. This ``__init__`` imports nothing.
"""
