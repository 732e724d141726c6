"""Backend implementations; each module exposes one `Backend` instance named BACKEND (see fusedrnn.registry)."""
