// SPDX-License-Identifier: GPL-2.0

//! tcm_ha: dual-node high availability for the Linux SCSI target (LIO).
//!
//! The module registers the LIO backstore `ha` and keeps an interlink to a
//! peer node, in the manner of FreeBSD CTL HA. This is the skeleton: it loads,
//! reports its version and unloads.

use kernel::prelude::*;

mod backend;
mod lio;
mod scsi;

// The plain-Rust layers are wired into the module issue by issue; until then
// parts of them are only exercised by the host tests.
#[allow(dead_code)]
#[path = "core/mod.rs"]
mod core_logic;

/// Version of the module, from the top-level `VERSION` file (set by Kbuild).
const VERSION: &str = env!("TCM_HA_VERSION");

module! {
    type: TcmHa,
    name: "tcm_ha",
    authors: ["tcm_ha developers"],
    description: "Dual-node HA backstore for the Linux SCSI target (LIO)",
    license: "GPL",
}

struct TcmHa {
    _backend: lio::Registration,
}

impl kernel::Module for TcmHa {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let backend = lio::Registration::register(module)?;
        pr_info!(
            "version {} loaded: backstore 'ha' registered (protocol {})\n",
            VERSION,
            core_logic::PROTOCOL_VERSION
        );
        Ok(TcmHa { _backend: backend })
    }
}

impl Drop for TcmHa {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
