// SPDX-License-Identifier: GPL-2.0

//! Fuzz target: feed arbitrary frame sequences to the handshake state machine.

#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

// The core items are `pub(crate)`, so the sources are mounted here directly
// instead of going through the `tcm_ha_core` library.
#[path = "../../../rust/core/mod.rs"]
mod core_logic;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    let _ = harness::handshake(data);
});
