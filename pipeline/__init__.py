"""The image variation pipeline: what runs in Lambda and on a laptop.

Kept free of imports so that `python -m pipeline` and a cold Lambda start pay only for
the modules a call really needs.
"""
