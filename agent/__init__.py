"""deskpilot: a desktop agent that operates a real computer with GLM-4.5V.

The package ``agent`` holds the loop and what surrounds it (screen, planner, geometry,
trajectory, CLI); ``actions`` holds what can be done to a desktop.
"""

__version__ = "0.1.0"
