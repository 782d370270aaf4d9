"""Tuning: desired state from profiles, observed state from the kernel, the plan between
them, and the transaction that applies it. One module per setting kind."""
