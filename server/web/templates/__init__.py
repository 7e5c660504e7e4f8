"""Page templates (a package so they ship in the wheel)."""
