"""SNMP test peers: snmpsim started for the tests, and generators of .snmprec device recordings."""
