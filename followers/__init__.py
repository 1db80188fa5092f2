"""Fake-follower detection: follow events, account risk, burst and lockstep detectors, batch scan."""
