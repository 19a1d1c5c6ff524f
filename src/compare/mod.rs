//! `tokenlens compare`: two runs (or one) read back and compared.

pub mod chunks;
pub mod reps;
