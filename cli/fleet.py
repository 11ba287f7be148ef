"""``kitty-orch fleet ...``: placeholder until the fleet commands land."""
