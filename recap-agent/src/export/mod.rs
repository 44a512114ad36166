//! Export of a window's numbers: Prometheus (`/metrics` while the window is open, and a short
//! linger after it) and OTLP (gRPC or HTTP/protobuf: metrics during the window and a final
//! flush, plus window start/end log records). Both take their numbers from the summary through
//! `catalog::samples`, so what is exported is what the summary says.

pub mod catalog;
pub mod otlp;
pub mod prometheus;
