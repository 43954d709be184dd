"""napari widgets, one module per flow; each is thin and calls the core library."""
