"""droptune: tune dropout regularisation (rates, placement, variant, width, lr, max-norm)."""

__version__ = "0.1.0"
