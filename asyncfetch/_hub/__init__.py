"""The torch.hub side: checkpoint files, registry names, key adaptation, one download per node."""
