"""Jobs of this app: thin entry points that call services."""
