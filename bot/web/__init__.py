"""The webhook receiver (Flask): authenticate, bound, parse, record gates, enqueue, answer fast."""
