"""Examples of a user's own code: models and data droptune tunes without being edited."""
