"""The sandboxed inference worker: a separate program the service supervises."""
