//! The agent: calls, hot-instance pools, capacity, timeouts, logs and call records
