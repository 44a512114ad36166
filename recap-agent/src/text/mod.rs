//! Text at the edges: durations and sizes as users type them, RFC 3339 timestamps, strings
//! from the target made safe for a terminal, URLs without their credentials. The bottom layer: it imports nothing of the crate.

pub mod terminal;
pub mod time;
pub mod units;
pub mod url;
