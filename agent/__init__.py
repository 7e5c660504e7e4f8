"""The hisguard agent: probes this server and its network, classifies faults by the plan, delivers them."""
