// SPDX-License-Identifier: GPL-2.0

//! tcm_ha: dual-node high availability for the Linux SCSI target (LIO).
//!
//! The module registers the LIO backstore `ha` and keeps an interlink to a
//! peer node, in the manner of FreeBSD CTL HA. Its parameters give the node
//! settings their values at load (as CTL's loader tunables do); configfs
//! (`/sys/kernel/config/tcm_ha/`) changes them afterwards.

use kernel::prelude::*;

mod backend;
mod barrier;
mod configfs;
mod forward;
mod link;
mod lio;
mod prsync;
mod proxy;
mod scsi;
mod serialize;
mod sys;

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
    params: {
        ha_id: u8 {
            default: 0,
            description: "ha_id at load: 0 (single node, default), 1 or 2 (configfs ha_id changes it)",
        },
        ha_mode: u8 {
            default: 0,
            description: "ha_mode at load: 0 active/standby (default), 1 serialize, 2 proxy",
        },
        secondary: bool {
            default: false,
            description: "Start as ha_role=secondary (default: primary)",
        },
        auto_failover: bool {
            default: false,
            description: "Start with failover=auto (default: manual)",
        },
    },
}

#[pin_data(PinnedDrop)]
struct TcmHa {
    /// The interlink thread: stopped first on unload, so the peer sees the
    /// link close before anything else goes away.
    #[pin]
    _link: link::Service,
    /// `/sys/kernel/config/tcm_ha/`: the node's HA settings.
    #[pin]
    _node: kernel::configfs::Subsystem<configfs::Node>,
    _backend: lio::Registration,
    /// The forwarding tables, given back after the thread has stopped.
    _forward: forward::Tables,
}

impl kernel::InPlaceModule for TcmHa {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        lio::init_registry();
        forward::init();
        serialize::init();
        barrier::init();
        let shared = link::new_interlink();
        try_pin_init!(TcmHa {
            _link <- {
                // The node settings get the parameters' values before the
                // link thread and configfs can read them.
                configfs::NODE.load_params(
                    module_parameters::ha_id.value(),
                    module_parameters::ha_mode.value(),
                    module_parameters::secondary.value(),
                    module_parameters::auto_failover.value(),
                )?;
                link::Service::start(shared.as_ref().map_err(|e| *e)?.clone())
            },
            _node <- configfs::subsystem(shared.as_ref().map_err(|e| *e)?.clone()),
            _backend: {
                let backend = lio::Registration::register(module)?;
                pr_info!(
                    "version {} loaded: backstore 'ha' registered (protocol {})\n",
                    VERSION,
                    core_logic::PROTOCOL_VERSION
                );
                backend
            },
            _forward: forward::Tables,
        })
    }
}

#[pinned_drop]
impl PinnedDrop for TcmHa {
    fn drop(self: Pin<&mut Self>) {
        pr_info!("unloaded\n");
    }
}
