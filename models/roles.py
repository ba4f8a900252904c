"""The names of the serving roles, shared by the registry aliases, bundles and the loop."""

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Registry alias remembering the champion a promotion replaced (for rollback).
PREVIOUS_CHAMPION = "previous-champion"
ROLES = (CHAMPION, CHALLENGER)
