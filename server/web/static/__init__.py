"""CSS and JS served at /static (a package so they ship in the wheel)."""
