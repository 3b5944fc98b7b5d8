"""The pure core: parse events, classify scans, apply policy, the polling rule, render reports. No I/O."""
