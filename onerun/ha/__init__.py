"""HA: three (or five, seven) front-ends in one OpenNebula Raft zone, formed by onerun.

docs/ha.md has the design. The modules, each one concern:
- ``zone``: the zone's facts (servers, Raft status) and oned's zone API over XML-RPC;
- ``formation``: the pure decision, from this member's volume and its peers' answers, of
  the next formation step (start, found the zone, join it, wait, refuse);
- ``wire``: onerun's zone service between members (reports, the DB snapshot), its client
  and its authentication;
- ``actions``: the plan actions that found and join a zone;
- ``conf``: oned.conf in a zone (FEDERATION, RAFT, the Raft hooks);
- ``label``: this pod's Raft role as a label, through the Kubernetes API;
- ``hook``: ``onerun raft-hook``, the command oned runs at each role change;
- ``start``: the formation loop ``onerun start`` runs before its ordinary plan, and the
  ``zone-serve`` program.
"""
