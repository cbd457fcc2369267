// SPDX-License-Identifier: GPL-2.0

//! Fuzz target: an arbitrary byte stream, in arbitrary chunks, into one
//! interlink session (framing, sequence checks, handshake, heartbeats).

#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

#[path = "../../../rust/core/mod.rs"]
mod core_logic;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    harness::session(data);
});
