"""The hisguard server: receives agents' reports, keeps incidents, runs the emergency plan.

Layers, each importing only those below it: api → domain → storage.
"""
