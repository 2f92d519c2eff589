"""Models: sequence layers (registered in LAYERS by `model.kind`) and the shared deep backbone."""
