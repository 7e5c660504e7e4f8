"""Domain: incidents, agents and their tokens, the emergency plan's workflow and clocks."""
