// SPDX-License-Identifier: GPL-2.0

//! Fuzz target: decode arbitrary bytes as interlink frames and messages.

#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

// The core items are `pub(crate)`, so the sources are mounted here directly
// instead of going through the `tcm_ha_core` library.
#[path = "../../../rust/core/mod.rs"]
mod core_logic;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::decode(data));
