//! Simulated platform for tests.
