#![no_std]
// Exists so that recap-agent can name this crate as a build-dependency (rebuilds on change).
