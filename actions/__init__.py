"""What can be done to a desktop: the action models, key names and executors."""
