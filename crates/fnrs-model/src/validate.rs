//! Validation of client input, with Fn's exact messages (spec §2.2).
