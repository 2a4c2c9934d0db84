"""A user's own package, as a researcher would write it: droptune imports nothing from here."""
