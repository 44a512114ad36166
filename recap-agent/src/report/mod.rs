//! The window's summary: built from raw counts, printed as a table or as one JSON document
//! (schema in docs/window-json.md).

mod summary;
mod table;

pub use summary::*;
pub use table::render_table;
