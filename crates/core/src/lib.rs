//! The pure core of wgadm: the model of a WireGuard server and its peers, validation, address
//! allocation, the plan that brings a live device to the desired state, and the renderers of
//! wg-quick configs.
//!
//! Nothing here does I/O. Time, randomness and the observed device arrive as arguments, so every
//! rule is tested with plain unit and property tests, without root.

pub mod check;
pub mod conf;
pub mod date;
mod de;
pub mod device;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod expiry;
pub mod firewall;
pub mod import;
pub mod ipam;
pub mod key;
pub mod metrics;
pub mod model;
pub mod name;
pub mod plan;
pub mod refused;
pub mod render;
pub mod snapshot;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod yaml;

pub use check::{check, Problem};
pub use conf::ConfError;
pub use date::{Date, DateError};
pub use endpoint::{Endpoint, EndpointError};
pub use error::Error;
pub use key::{Key, KeyError, Secret};
pub use model::{Peer, Server, State};
pub use name::{InterfaceName, NameError, PeerName};
