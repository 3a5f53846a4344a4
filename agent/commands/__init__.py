"""The commands layer: each command declares its arguments and does its printing here; nothing below prints."""
