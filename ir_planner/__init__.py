"""IR Planner: planning and guidance for percutaneous needle procedures.

Research software, not a certified medical device.
"""

__version__ = "0.1.0"
