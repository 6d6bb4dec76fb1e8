"""OCPI 2.2.1 for the roaming partners (eMSPs) of each CPO: versions, credentials, locations."""
