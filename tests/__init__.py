"""droptune's tests: a package, so helpers and cluster fixtures import as tests.*."""
