// SPDX-License-Identifier: GPL-2.0

//! Host build of the module's plain-Rust logic: the same source files as the
//! kernel module (`rust/core/`), compiled with std for `cargo test` and fuzzing.

#![no_std]
#![allow(dead_code, unreachable_pub)]

#[cfg(test)]
extern crate std;

#[path = "../rust/core/mod.rs"]
pub mod core_logic;
